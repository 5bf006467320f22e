#!/usr/bin/env bash
# One lease of a GPU machine: the test suite with CUDA, then every benchmark that takes
# --device cuda. Meant for the workplace's device tool (Python 3.12 with torch, jax and numpyro,
# but no pyro-ppl or arviz): their wheels travel in .whl/ (see BENCHMARKS.md). Logs go to $OUT.
#   bash benchmarks/run_gpu.sh [tests|bench|all] [benchmark names, e.g. engines layers_power]
set -u
what=${1:-all}
shift
only=" $* "
out=${OUT:-/tmp/symprior-gpu}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
if [ -d .whl ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site:$PWD
fi
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv
python3 -c "import torch, pyro, arviz, numpyro, jax, numpy; print('torch', torch.__version__, \
'| pyro', pyro.__version__, '| arviz', arviz.__version__, '| numpyro', numpyro.__version__, \
'| jax', jax.__version__, jax.devices(), '| numpy', numpy.__version__)" 2>&1 | grep -v Warning
if [ "$what" = tests ] || [ "$what" = all ]; then
    # The CUDA-marked tests first (the ones no CPU machine runs), then the whole suite. The
    # notebooks need a Jupyter kernel, which the machine does not have.
    timeout 240 python3 -m pytest -q -p no:cacheprovider -p no:benchmark -m cuda --ignore=tests/test_notebooks.py 2>&1 | tee "$out/tests_cuda.log" | tail -25
    timeout 420 python3 -m pytest -q -p no:cacheprovider -p no:benchmark -n 14 --ignore=tests/test_notebooks.py \
        2>&1 | tee "$out/tests_all.log" | tail -40
fi
if [ "$what" = bench ] || [ "$what" = all ]; then
    for cmd in "engines.py --device cuda --rounds 5" \
        "layers_power.py --device cuda" \
        "layers_nonstationary.py --device cuda --repeats 15 --warmup 3" \
        "laplace_full.py --device cuda" \
        "layers_rpp.py --device cuda" \
        "layers_lie_algebra.py --device cuda" \
        "objective_remul.py --device cuda"; do
        name=$(echo "$cmd" | cut -d. -f1)
        if [ "$only" != "  " ] && [[ "$only" != *" $name "* ]]; then continue; fi
        echo "=== benchmarks/$cmd"
        timeout 150 python3 benchmarks/$cmd > "$out/bench_$name.log" 2>&1
        echo "exit $?"
        tail -30 "$out/bench_$name.log"
        cat "$out/bench_$name.log" >> "$out/bench.log" && rm "$out/bench_$name.log"
    done
fi

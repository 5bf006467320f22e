from symprior.cli import main


def test_demo_prints_the_bases(capsys):
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "SO(3): V ⊗ V -> V: 1 basis element(s)" in out
    assert "O(3): V ⊗ V -> V: 0 basis element(s)" in out
    assert "S_4: V -> V: 2 basis element(s)" in out
    # the cross product, normalised to max |entry| = 1, has exactly six non-zero entries of +-1
    block = out.split("SO(3): V ⊗ V -> V")[1].split("SO(3): V ⊗ V -> Scalar")[0]
    assert block.count("1.0000") == 6

"""bench/backup.py runs end to end on a small scale and prints its table."""

from tests.bench_modules import load_bench

bench = load_bench("backup")


def test_the_benchmark_backs_up_verifies_and_restores(capsys):
    bench.main(["--messages", "300"])
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("| sqlite: 300 messages, backup ")
    assert table[2].startswith("| storing 200 messages, no backup | - |")
    assert table[3].startswith("| backup create, storing ")
    assert table[4].startswith("| backup verify (ok) | ")
    assert table[5].startswith("| backup restore (with the schema check and upgrade) | ")

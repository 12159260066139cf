"""bench/sender_rules.py runs end to end on a small scale and prints its table."""

from tests.bench_modules import load_bench

bench = load_bench("sender_rules")


def test_the_benchmark_prints_a_row_per_setting_and_restores_the_lookup(capsys):
    from spamguard.services import sender_rules

    original = sender_rules.actions_for
    bench.main(["--messages", "20", "--rules", "10"])
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("| sqlite, 20 messages each | p50 ms")
    assert [row.split(" | ")[0] for row in table[2:]] == [
        "| no rules", "| 10 rules", "| lookup left out"]
    assert sender_rules.actions_for is original

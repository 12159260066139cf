"""bench/purge.py runs end to end on a small scale and prints its table."""

import re

from tests.bench_modules import load_bench

bench = load_bench("purge")


def test_the_benchmark_purges_the_older_half_and_prints_a_row_with_and_without(capsys):
    bench.main(["--messages", "400"])
    table = capsys.readouterr().out.splitlines()
    # Every 20th message is reviewed and kept: 190 of the older 200 go.
    assert table[0].startswith("| sqlite: purge 190 of 400 messages (selected 190) | seconds")
    assert table[2].startswith("| storing 200 messages, no purge | - | - |")
    assert table[3].split(" | ")[0].endswith("messages during the purge")
    during_compaction = table[4].split(" | ")
    assert during_compaction[0].endswith("messages during `db compact`")
    assert during_compaction[2] == "-" and float(during_compaction[1]) >= 0
    assert table[6] == "campaigns recounted 1, removed 0"
    assert re.fullmatch(r"stores refused as busy: \d+ during the purge, \d+ during "
                        r"`db compact`", table[7])
    assert table[8].startswith("compaction: ") and table[8].endswith(
        "(database file and its log, log emptied)")

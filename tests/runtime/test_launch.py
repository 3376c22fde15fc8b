"""What a failed launch reports: the worker's own error, not only torchrun's summary that follows it."""

from __future__ import annotations

from distlstm.runtime.launch import failure_report


def test_a_long_failure_keeps_the_workers_last_words_and_the_tail():
    cause = "terminate called after throwing an instance of 'gloo::IoException'"
    stderr = "\n".join(["W1126 warning"] * 50 + [cause, "  what():  Connection reset by peer"]
                       + ["torchrun summary line " + str(i) for i in range(300)])
    report = failure_report(stderr)
    assert cause in report and "what():  Connection reset by peer" in report
    assert report.endswith(stderr[-2000:]) and "W1126 warning" not in report
    assert len(report) < 2500


def test_a_short_failure_is_reported_whole():
    assert failure_report("Traceback ...\nValueError: bad") == "Traceback ...\nValueError: bad"

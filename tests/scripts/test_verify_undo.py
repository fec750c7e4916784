"""verify.py's undo of probe lines that a broken launcher let into a history
outside the test sessions: only exactly this run's lines come back out."""
import os

import pytest


def sessions(verify, n=2):
    out = []
    for i in range(n):
        s = verify["Session"](i, "abcd1234-%d" % i)
        s.history_lines = (b'{"display":"csdeploy verify abcd1234-%d","sessionId":"abcd1234-%d"}\n' % (i, i),)
        out.append(s)
    return out


OLD = b'{"display":"mine"}\n'


def setup(verify, tmp_path):
    path = tmp_path / "history.jsonl"
    path.write_bytes(OLD)
    os.utime(path, ns=(1_000_000_000, 2_000_000_000))
    return path, verify["histories_outside"](str(tmp_path), str(tmp_path / "sessions"), [])


def test_exactly_our_lines_are_taken_out_and_mtime_restored(verify, tmp_path):
    path, states = setup(verify, tmp_path)
    ss = sessions(verify)
    with open(path, "ab") as f:
        f.write(ss[1].history_lines[0] + ss[0].history_lines[0])
    notes = verify["undo_probe_lines"](states, ss)
    assert path.read_bytes() == OLD
    assert os.stat(path).st_mtime_ns == 2_000_000_000
    assert notes == ["%s: 2 probe lines of this run taken out (back to %d bytes)" % (path, len(OLD))]


@pytest.mark.parametrize("extra", [
    b'{"display":"someone else"}\n',  # a line that is not ours
    b"",  # (with ours, below) a partial line
    b'{"display":"csdeploy verify abcd1234-0","sessionId":"abcd1234-0"}\n',  # ours twice
    b'{"display":"csdeploy verify ffff0000-0","sessionId":"ffff0000-0"}\n',  # another run's
])
def test_anything_else_appended_leaves_the_file_alone(verify, tmp_path, extra):
    path, states = setup(verify, tmp_path)
    ss = sessions(verify)
    added = ss[0].history_lines[0] + extra if extra else ss[0].history_lines[0] + b'{"partial'
    with open(path, "ab") as f:
        f.write(added)
    notes = verify["undo_probe_lines"](states, ss)
    assert path.read_bytes() == OLD + added
    assert notes and notes[0].endswith("left")


def test_a_replaced_file_is_left_alone(verify, tmp_path):
    path, states = setup(verify, tmp_path)
    ss = sessions(verify)
    os.rename(path, tmp_path / "aside")  # kept, so its inode number is not reused
    path.write_bytes(OLD + ss[0].history_lines[0])
    assert verify["undo_probe_lines"](states, ss) == []
    assert path.read_bytes() == OLD + ss[0].history_lines[0]


def test_a_history_that_did_not_exist_and_holds_only_ours_is_removed(verify, tmp_path):
    states = verify["histories_outside"](str(tmp_path), str(tmp_path / "sessions"), [])
    ss = sessions(verify)
    path = tmp_path / "history.jsonl"
    path.write_bytes(ss[0].history_lines[0])
    verify["undo_probe_lines"](states, ss)
    assert not path.exists()

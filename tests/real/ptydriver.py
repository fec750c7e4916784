"""Drive an interactive program through a pseudo-terminal (stdlib only).

Pty starts a command in a pseudo-terminal of fixed size, in a session and
process group of its own (the pty is its controlling terminal), keeps
everything it prints, and offers: wait until the screen text matches, type,
press Enter, and stop it (killing the whole process group when it does not
exit by itself).  The "screen" is the output with the terminal escape
sequences removed (cursor-forward moves become spaces), which is enough to
recognise what a full-screen program such as Claude Code shows; `tail()` is
the text printed since a mark, so that a wait does not match an old screen.
"""
import codecs
import errno
import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
import unicodedata

_SESSION_LEADER = ("import fcntl, os, sys, termios; os.setsid(); fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
                   "os.execvp(sys.argv[1], sys.argv[1:])")
ENTER = "\r"
NBSP = "\u00a0"
CTRL_C = "\x03"

# CSI ... final byte; OSC ... BEL or ST; DCS/APC/PM/SOS ... ST; two-byte ESC x.
_CURSOR_FORWARD = re.compile(r"\x1b\[(\d*)C")
_ANSI = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"          # CSI
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)"  # OSC
    r"|\x1b[PX^_][^\x1b]*\x1b\\"        # DCS, SOS, PM, APC
    r"|\x1b[@-Z\\-_()*+#%][0-~]?"       # other escapes (charset selections take one more byte)
    r"|[\x00-\x08\x0b-\x1f\x7f]")       # controls but tab and newline (CR too)


def strip_ansi(text):
    """Printable text of terminal output: escapes removed, cursor-forward as spaces."""
    text = _CURSOR_FORWARD.sub(lambda m: " " * int(m.group(1) or 1), text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _ANSI.sub("", text)


class Screen(object):
    """A minimal terminal screen: enough of VT100/xterm for a full-screen
    program that draws with absolute and relative cursor moves and erases
    (CUP, CUU/CUD/CUF/CUB, CNL/CPL, CHA, VPA, EL, ED, CR, LF, BS, save and
    restore cursor, the alternate screen).  Colours, modes and OSC strings
    are ignored; a character takes one cell, or two when East Asian wide."""

    def __init__(self, rows, cols):
        self.rows, self.cols = rows, cols
        self.clear()
        self.saved = (0, 0)
        self._pending = ""

    def clear(self):
        self.grid = [[" "] * self.cols for _ in range(self.rows)]
        self.y = self.x = 0

    def lines(self):
        return ["".join(c for c in row if c is not None).rstrip(" ") for row in self.grid]

    def display(self):
        return "\n".join(self.lines()).rstrip("\n")

    def _lf(self):
        if self.y == self.rows - 1:
            self.grid.pop(0)
            self.grid.append([" "] * self.cols)
        else:
            self.y += 1

    def _put(self, ch):
        w = 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
        if unicodedata.combining(ch):
            return
        if self.x + w > self.cols:
            self.x = 0
            self._lf()
        self.grid[self.y][self.x] = ch
        if w == 2 and self.x + 1 < self.cols:
            self.grid[self.y][self.x + 1] = None
        self.x = min(self.x + w, self.cols)

    def feed(self, text):
        text = self._pending + text
        self._pending = ""
        i, n = 0, len(text)
        while i < n:
            ch = text[i]
            if ch == "\x1b":
                m = _SEQ.match(text, i)
                if m is None:
                    if _INCOMPLETE.match(text, i):
                        self._pending = text[i:]  # the rest comes with the next read
                        return
                    i += 1
                    continue
                self._escape(m.group(0))
                i = m.end()
                continue
            if ch == "\r":
                self.x = 0
            elif ch == "\n":
                self._lf()
            elif ch == "\b":
                self.x = max(0, self.x - 1)
            elif ch == "\t":
                self.x = min(self.cols - 1, (self.x // 8 + 1) * 8)
            elif ch >= " " and ch != "\x7f":
                self._put(ch)
            i += 1

    def _escape(self, seq):
        if seq in ("\x1b7", "\x1b[s"):
            self.saved = (self.y, self.x)
            return
        if seq in ("\x1b8", "\x1b[u"):
            self.y, self.x = self.saved
            return
        if not seq.startswith("\x1b["):
            return
        final, body = seq[-1], seq[2:-1]
        if body.startswith("?"):
            if final in "hl" and any(p in ("1049", "47", "1047") for p in body[1:].split(";")):
                self.clear()
            return
        try:
            args = [int(p) if p else 0 for p in body.split(";")] if body else []
        except ValueError:
            return
        a = args[0] if args else 0
        n = a or 1
        if final in "Hf":
            row = (args[0] if args and args[0] else 1)
            col = (args[1] if len(args) > 1 and args[1] else 1)
            self.y, self.x = min(row, self.rows) - 1, min(col, self.cols) - 1
        elif final == "A":
            self.y = max(0, self.y - n)
        elif final == "B":
            self.y = min(self.rows - 1, self.y + n)
        elif final == "C":
            self.x = min(self.cols - 1, self.x + n)
        elif final == "D":
            self.x = max(0, self.x - n)
        elif final == "E":
            self.y, self.x = min(self.rows - 1, self.y + n), 0
        elif final == "F":
            self.y, self.x = max(0, self.y - n), 0
        elif final == "G":
            self.x = min(n, self.cols) - 1
        elif final == "d":
            self.y = min(n, self.rows) - 1
        elif final == "K":
            row = self.grid[self.y]
            lo, hi = {0: (self.x, self.cols), 1: (0, self.x + 1), 2: (0, self.cols)}.get(a, (0, 0))
            for k in range(lo, hi):
                row[k] = " "
        elif final == "J":
            if a == 0:
                self.grid[self.y][self.x:] = [" "] * (self.cols - self.x)
                for r in range(self.y + 1, self.rows):
                    self.grid[r] = [" "] * self.cols
            elif a == 1:
                for r in range(self.y):
                    self.grid[r] = [" "] * self.cols
                self.grid[self.y][:self.x + 1] = [" "] * (self.x + 1)
            else:
                self.grid = [[" "] * self.cols for _ in range(self.rows)]


_SEQ = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)"
    r"|\x1b[PX^_][^\x1b]*\x1b\\"
    r"|\x1b[()*+#%][0-~]"
    r"|\x1b[0-~]")
_INCOMPLETE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*|\][^\x07\x1b]*\x1b?|[PX^_][^\x1b]*\x1b?|[()*+#%])?\Z")


class Timeout(AssertionError):
    pass


class Pty(object):
    def __init__(self, argv, env, cwd=None, rows=40, cols=120, name="pty"):
        self.name = name
        self.argv = list(argv)
        self.raw = bytearray()
        self.screen = Screen(rows, cols)
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.started = time.monotonic()
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

        # A session of its own whose controlling terminal is the pty, made by a
        # small exec wrapper rather than a preexec_fn (not safe in a process
        # with threads, and the tests run a proxy thread).
        try:
            self.proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", _SESSION_LEADER] + self.argv,
                                         stdin=slave, stdout=slave, stderr=slave,
                                         env=env, cwd=cwd, close_fds=True)
        finally:
            os.close(slave)
        self.master = master
        os.set_blocking(master, False)
        self.pgid = self.proc.pid

    # ------------------------------------------------------------ output
    def pump(self, timeout=0.05):
        """Read what is there (waiting up to timeout for the first bytes)."""
        if self.master is None:
            if timeout:
                time.sleep(timeout)
            return False
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return False
        got = False
        while self.master is not None:
            try:
                data = os.read(self.master, 65536)
            except BlockingIOError:
                break
            except OSError as e:  # EIO: every process holding the pty is gone
                if e.errno != errno.EIO:
                    raise
                data = b""
            if not data:
                os.close(self.master)
                self.master = None
                break
            self.raw += data
            self.screen.feed(self._decoder.decode(data))
            got = True
        return got

    def display(self):
        """What the terminal shows now (rows joined by newlines, right-trimmed)."""
        return self.screen.display()

    def text(self, since=0):
        """Everything printed since a mark, escapes stripped (a log, not a screen)."""
        return strip_ansi(self.raw[since:].decode("utf-8", "replace"))

    def mark(self):
        """A position in the output, for text(since=...)."""
        self.pump(0)
        return len(self.raw)

    def wait(self, predicate, timeout=30.0, what=None):
        """Pump output until predicate(screen text) holds; returns the screen text.
        predicate: a string (substring), a compiled regex, or a callable."""
        if isinstance(predicate, str):
            what = what or repr(predicate)
            needle = predicate
            predicate = lambda t: needle in t  # noqa: E731
        elif hasattr(predicate, "search"):
            what = what or "/%s/" % predicate.pattern
            rx = predicate
            predicate = lambda t: rx.search(t) is not None  # noqa: E731
        deadline = time.monotonic() + timeout
        while True:
            self.pump(0.05)
            screen = self.display()
            if predicate(screen):
                return screen
            if time.monotonic() > deadline:
                raise Timeout("%s: no %s after %.0f s; the screen:\n%s"
                              % (self.name, what or "condition", timeout, screen))
            if self.master is None and self.proc.poll() is not None:
                raise Timeout("%s: exited (status %s) before %s; the screen:\n%s"
                              % (self.name, self.proc.returncode, what or "condition", screen))

    # ------------------------------------------------------------ input
    def send(self, text):
        data = text.encode() if isinstance(text, str) else bytes(text)
        deadline = time.monotonic() + 10
        while data:
            self.pump(0)
            if self.master is None:
                raise Timeout("%s: exited (status %s) while we typed" % (self.name, self.proc.poll()))
            try:
                n = os.write(self.master, data)
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise Timeout("%s: does not read its input" % self.name)
                time.sleep(0.01)
                continue
            data = data[n:]

    # ------------------------------------------------------------ end
    def alive(self):
        return self.proc.poll() is None

    def wait_exit(self, timeout=10.0):
        """The exit status once it has exited (output pumped meanwhile); None on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.pump(0.05)
            if self.proc.poll() is not None:
                return self.proc.returncode
        return None

    def close(self):
        """Kill whatever is left of its process group (SIGKILL) and release the pty."""
        try:
            os.killpg(self.pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.proc.poll() is None:
            self.proc.kill()  # not yet its own group leader (killed right after the start)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        if self.master is not None:
            os.close(self.master)
            self.master = None

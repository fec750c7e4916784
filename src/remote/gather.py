r"""csdeploy's remote gather step: the state of every path a host's plan touches.

It is the one command every push runs (a push with nothing to change runs
nothing else), so it is kept to what starts fastest: no json (importing it,
with re, costs more than all of gather's own work), no signal handling (it
changes nothing).

stdin:  per path `WANT\0PATH\0`. WANT is empty (stat only), `hash` (and the
        sha256), or the sha256 the file should have (and, when it differs,
        the old content, so --diff costs no extra round trip).
stdout: `UID\0`, then per path
        `PATH\0TYPE\0MODE\0UID\0SHA256\0CONTENT\0TARGET\0TODIR\0`, empty
        fields for none: the absolute path (`~` expanded), one of
        missing|file|dir|link|other, the octal mode, the owner's uid, the
        old content in base64, a symlink's target as it is written, and 1
        for a symlink that leads to a directory.
Python 3.8+ standard library only.
"""
import binascii
import os
import stat
import sys

from hashlib import sha256

MAX_DIFF_BYTES = 1 << 20


def sha256_file(path):
    digest = sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


def describe(want, path):
    path = os.path.join(os.path.expanduser("~"), os.path.expanduser(path))  # as apply.py's expand
    fields = [os.fsencode(path), b"missing", b"", b"", b"", b"", b"", b""]
    try:
        st = os.lstat(path)
    except OSError:
        # Missing, or behind a directory we may not search: what stat in
        # gather.sh reports as nothing. Applying to it then says why.
        return fields
    fields[2] = b"%o" % stat.S_IMODE(st.st_mode)
    fields[3] = b"%d" % st.st_uid
    if stat.S_ISLNK(st.st_mode):
        fields[1] = b"link"
        try:
            fields[6] = os.fsencode(os.readlink(path))
        except OSError:
            pass  # replaced since lstat: no target, so no link task calls it its own
        if os.path.isdir(path):
            fields[7] = b"1"
    elif stat.S_ISDIR(st.st_mode):
        fields[1] = b"dir"
    elif stat.S_ISREG(st.st_mode):
        fields[1] = b"file"
        if want:
            try:
                digest = sha256_file(path)
                fields[4] = digest.encode("ascii")
                if want != "hash" and want != digest and st.st_size <= MAX_DIFF_BYTES:
                    with open(path, "rb") as f:
                        fields[5] = binascii.b2a_base64(f.read(), newline=False)
            except OSError:
                pass  # unreadable: no hash, as sha256sum in gather.sh gives none
    else:
        fields[1] = b"other"
    return fields


def main():
    words = sys.stdin.buffer.read().split(b"\0")[:-1]
    out = [b"%d" % os.getuid()]
    for i in range(0, len(words) - 1, 2):
        out += describe(words[i].decode("ascii"), os.fsdecode(words[i + 1]))
    sys.stdout.buffer.write(b"\0".join(out) + b"\0")
    sys.stdout.flush()


if __name__ == "__main__":
    main()

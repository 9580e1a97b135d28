"""The format of deselect.txt and baseline-zaqar-23.0.1.txt, shared by run.py and the plugin.

One `ID  # reason` entry a line; blank lines and lines starting with '#' are comments. An ID is
relative to the zaqar/tests package and names a folder (ending in '/'), a file, a class, a test,
or every ddt variant of a test.
"""
import re


def read_list(path):
    """{ID: reason}. Every entry must give its reason: a list of exceptions without reasons rots."""
    entries = {}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip() or line.lstrip().startswith('#'):
                continue
            entry, sep, reason = line.partition(' #')
            if not sep or not reason.strip():
                raise ValueError('%s:%d: "%s" gives no "  # reason"' % (path, n, entry.strip()))
            entries[entry.strip()] = reason.strip()
    return entries


def matches(entry, tid):
    """Whether the entry covers test id `tid`. `test_x` covers the variants ddt generates from it
    (`test_x_1_abc`) but no other test (`test_x_other`)."""
    if entry.endswith('/'):
        return tid.startswith(entry)
    return (tid == entry or tid.startswith(entry + '::')
            or re.fullmatch(re.escape(entry) + r'_\d+(_.*)?', tid) is not None)


def covered(entries, tid):
    """The entries that cover `tid`."""
    return [e for e in entries if matches(e, tid)]

"""The one exception type users see: a problem with their input, told in one line.

Everything that is the user's fault (a missing file, a bad row, an unknown config key) raises
`HfSeqRecError` with a message naming the file, row, column and value. The CLI prints it as
`hfseqrec: error: ...` and exits with status 2, without a traceback.
"""


class HfSeqRecError(Exception):
    """A user-facing error whose message is a single line naming what is wrong."""

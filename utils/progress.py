"""Following a long run from outside: the one line per epoch (timestamp, where the run is, elapsed time
and ETA of the whole command) and the per-epoch CSV beside each result, which `tail -f` or a plotting
tool can read while the run goes on.

The CSV is a pure function of the run: no times in it, so a run killed and resumed writes the same
file as an uninterrupted one. A fresh run starts it with its header; a resumed run rewrites it with the
epochs its checkpoint holds (a row written after the last checkpoint is dropped, none is doubled);
then each epoch appends one row, flushed to disk at once. A fresh run writes its file at the end of its
first epoch.
"""
import csv
import dataclasses
import os
import time

from utils import io
from utils.base import UserError


def timestamp(now=None):
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))


def duration(seconds):
    """h:mm:ss"""
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Clock:
    """Elapsed time and ETA of a whole command. Work is counted in units (epochs, or epochs weighted by
    what one costs: a swipe's ratio-2 network takes far longer per epoch than its ratio-0.25 one). The
    ETA is the time per unit done so far, in this process, times the units left. Units restored from a
    checkpoint took no time here: skip() takes them off what is left without counting them as done."""

    def __init__(self, units, now=time.monotonic):
        self.now, self.start = now, now()
        self.left, self.done = float(units), 0.0

    def skip(self, units):
        self.left = max(self.left - units, 0.0)

    def advance(self, units):
        self.done += units
        self.left = max(self.left - units, 0.0)

    def add(self, units):
        """More work than planned (or less, when negative)."""
        self.left = max(self.left + units, 0.0)

    def elapsed(self):
        return self.now() - self.start

    def eta(self):
        """Seconds still to go, or None before the first unit is done."""
        return None if self.done <= 0 else self.elapsed() / self.done * self.left

    def summary(self):
        eta = self.eta()
        return f"elapsed {duration(self.elapsed())}, ETA {'?' if eta is None else duration(eta)}"


@dataclasses.dataclass
class Position:
    """Where one training run sits in its command, for the epoch line: `where` ("ratio 2/8"), the
    command's clock and what one epoch of this run counts on it."""
    where: str
    clock: Clock
    cost: float = 1.0


class EpochCSV:
    """One row per epoch; `columns` name them, the first is the epoch."""

    def __init__(self, path, columns):
        self.path, self.columns = path, tuple(columns)
        self.pending = None  # rows not yet on disk (see restart)

    def restart(self, rows=()):
        """Start the file over with the header and `rows` (dicts, the epochs a resumed run's checkpoint
        holds), atomically. A fresh run (no rows) writes nothing before its first epoch ends, so a run that
        fails at once leaves no file."""
        self.pending = list(rows)
        if rows:
            self._write_pending()

    def _write_pending(self):
        with io.atomic_write(self.path, "w") as f:
            writer = csv.writer(f)
            writer.writerow(self.columns)
            writer.writerows(self._cells(row) for row in self.pending)
        self.pending = None

    def append(self, row):
        if self.pending is not None:
            self.pending.append(row)
            return self._write_pending()
        try:
            with open(self.path, "a", newline="") as f:
                csv.writer(f).writerow(self._cells(row))
                f.flush()
                os.fsync(f.fileno())
        except OSError as err:
            raise UserError(f"cannot write {self.path}: {err.strerror or err}") from None

    def _cells(self, row):
        return [repr(row[c]) if isinstance(row[c], float) else row[c] for c in self.columns]


def read_csv(path):
    """The rows of a per-epoch CSV as dicts of strings (for tests and tools)."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))

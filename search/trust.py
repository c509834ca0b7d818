"""The trust boundary of ``resume``: Ray Tune's pickled state is restored only when this project signed it.

Ray Tune restores an experiment by unpickling what it wrote there: ``tuner.pkl``, the searcher's
``searcher-state-*.pkl`` (Optuna's study and sampler), ``callback-states-*.pkl``, ``basic-variant-state-*.json``
and ``experiment_state-*.json`` (each trial's state as a hex-encoded cloudpickle). A pickle runs whatever code it
names, so whoever can write an experiment directory or its bucket could run code on the next driver that resumes
it. Here every such file carries an HMAC-SHA256 made with a key that is kept *outside* the experiment:

- the **restore key**: ``$P2M_RESTORE_KEY`` when set (at least 16 characters; on a cluster, a secret held the way
  the templates hold Ray's token), else the file ``$XDG_CONFIG_HOME/p2m-search/restore.key``
  (``~/.config/p2m-search/restore.key``), made with 32 random bytes and mode 0600 the first time a search is
  launched on a machine without either;
- the signatures: ``SIGNATURES`` in the experiment (file name -> the hex HMACs, over the file's name and bytes,
  of its last ``KEPT_VERSIONS`` versions, newest first), written by :class:`SignState` straight to the experiment
  each time Ray snapshots its state, *before* Ray's sync carries that snapshot there; ``tuner.pkl``, which Ray
  writes straight to the experiment, is signed by :func:`sign_tuner` once the Tuner has written it.

Ray's sync copies the files of a snapshot one by one, in no fixed order, in a background thread, and a driver can
die between any two: the experiment then holds some files of the new snapshot and some of older ones. Each of
them verifies, since the signatures (which only this driver writes, one after the other) already named the new
versions when the sync began, and still name the older ones.

:func:`verify` runs before ``Tuner.restore``: a state file that is not signed, or whose HMAC differs, is refused in
one line naming it, and nothing is unpickled. Ray's pickled trial errors (``error.pkl``, which only rebuild an
exception object for the result grid; ``error.txt`` beside them keeps the message) are not signed: they are
deleted before a restore. Checkpoints are read with ``torch.load(weights_only=True)`` and the results are
Parquet: neither can run code, so neither is signed.

A driver killed in the step that adds the first trials, after Ray's first sync and before their signatures (Ray
takes that snapshot before any callback sees a trial), or a copy of an experiment to a machine with another key,
leaves state that does not verify: ``p2m search trust EXP`` signs it with this machine's key,
for the user who knows every writer of the experiment.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
from pathlib import Path

from ray.tune import Callback

from results import storage

KEY_ENV = "P2M_RESTORE_KEY"
SIGNATURES = "p2m-signatures.json"  # the state files of Ray's staging directory, signed at each snapshot
KEPT_VERSIONS = 64  # versions signed per file: a sync of Ray's more than 64 snapshots (10 s or more each) late fails
TUNER_SIGNATURE = "p2m-tuner-signature.json"  # tuner.pkl, signed after the Tuner wrote it
TUNER_FILE = "tuner.pkl"
ERROR_PICKLE = "error.pkl"
_STATE_PREFIXES = ("experiment_state", "searcher-state", "search_gen_state", "callback-states", "basic-variant-state")
PICKLE_HEADER = b"\x80"  # the PROTO opcode every pickle of protocol 2 or later opens with
MIN_KEY_LENGTH = 16

logger = logging.getLogger(__name__)


class UntrustedState(ValueError):
    """An experiment's Ray state is unsigned or signed with another key; the message names the file."""


def key_file() -> Path:
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "p2m-search" / "restore.key"


def restore_key(create: bool = False) -> bytes:
    """The restore key: ``$P2M_RESTORE_KEY``, else the key file (made when ``create`` and missing).

    Raises:
        UntrustedState: no key, or a key shorter than ``MIN_KEY_LENGTH``.
    """
    value = os.environ.get(KEY_ENV)
    if value is not None:
        if len(value) < MIN_KEY_LENGTH:
            raise UntrustedState(f"{KEY_ENV}: the restore key must have at least {MIN_KEY_LENGTH} characters")
        return value.encode()
    path = key_file()
    if not path.is_file():
        if not create:
            raise UntrustedState(f"{path}: no restore key on this machine (copy the key of the machine that launched "
                                 f"the search there, or set {KEY_ENV} to it)")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # a racing creator: the loser reads below
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(32) + "\n")
    key = path.read_text().strip()
    if len(key) < MIN_KEY_LENGTH:
        raise UntrustedState(f"{path}: the restore key must have at least {MIN_KEY_LENGTH} characters")
    return key.encode()


def is_state_file(name: str, head: bytes = b"") -> bool:
    """Whether Ray reads the file ``name`` (directly in an experiment; ``head``: its first bytes) when it restores
    the experiment: by Ray's names (``search_gen_state-*.json`` is a pickle too), or any pickle by its header."""
    return name == TUNER_FILE or name.endswith(".pkl") or name.startswith(_STATE_PREFIXES) or \
        head.startswith(PICKLE_HEADER)


def digest(key: bytes, name: str, data: bytes) -> str:
    """HMAC-SHA256 of a file's name and bytes (the name is signed too: a signed file renamed does not verify)."""
    return hmac.new(key, name.encode() + b"\0" + data, hashlib.sha256).hexdigest()


def sign_files(directory: str | os.PathLike, key: bytes) -> dict[str, str]:
    """The signatures of the state files directly in the local ``directory`` (file name -> hex HMAC)."""
    root = Path(directory)
    contents = {p.name: p.read_bytes() for p in sorted(root.iterdir())
                if p.is_file() and not p.name.startswith(".") and p.name not in (SIGNATURES, TUNER_FILE)}
    return _digests(contents, key)


def _digests(contents: dict[str, bytes], key: bytes) -> dict[str, str]:
    """The HMAC of each state file among ``contents`` (file name -> bytes)."""
    return {name: digest(key, name, data) for name, data in contents.items() if is_state_file(name, data)}


def _encode(signed: dict[str, list[str]]) -> bytes:
    return json.dumps(signed, indent=0, sort_keys=True).encode()


def sign_tuner(experiment: storage.Location, key: bytes) -> None:
    """Sign the ``tuner.pkl`` the Tuner has just written to ``experiment``."""
    tuner = storage.join(experiment, TUNER_FILE)
    signed = {TUNER_FILE: digest(key, TUNER_FILE, storage.read_bytes(tuner))}
    storage.write_bytes(storage.join(experiment, TUNER_SIGNATURE), json.dumps(signed).encode())


def sign_experiment(experiment: storage.Location, key: bytes) -> int:
    """Sign every state file of ``experiment`` as it is now (``p2m search trust``); returns how many."""
    names = [storage.name_of(f) for f in storage.list_files(experiment)]
    contents = {n: storage.read_bytes(storage.join(experiment, n)) for n in names if n != TUNER_FILE}
    signed = {n: [d] for n, d in _digests(contents, key).items()}
    storage.write_bytes(storage.join(experiment, SIGNATURES), _encode(signed))
    if TUNER_FILE in names:
        sign_tuner(experiment, key)
    return len(signed) + (TUNER_FILE in names)


def verify(experiment: storage.Location, key: bytes) -> None:
    """Check every state file directly in ``experiment`` against its signature, then delete the trials' pickled
    errors; nothing is unpickled.

    Raises:
        UntrustedState: naming the first file that is unsigned or whose signature differs.
    """
    signed = {**_signatures(experiment, SIGNATURES), **_signatures(experiment, TUNER_SIGNATURE)}
    for loc in storage.list_files(experiment):
        name = storage.name_of(loc)
        data = storage.read_bytes(loc)
        expected = signed.get(name)
        if expected is None and not is_state_file(name, data):
            continue
        actual = digest(key, name, data)
        if expected is None or not any(hmac.compare_digest(e, actual) for e in expected):
            what = "is not signed" if expected is None else "does not match its signature"
            raise UntrustedState(
                f"{loc}: {what} with this machine's restore key; refused without reading it (Ray would unpickle "
                "it). If every writer of this experiment is trusted, sign its state with: p2m search trust "
                f"{experiment}")
    for trial in storage.subdirs(experiment):
        storage.delete(storage.join(experiment, trial, ERROR_PICKLE))


class SignState(Callback):
    """Signs each snapshot Ray takes of its state, in the driver's staging directory, and writes the signatures
    to the experiment before Ray's sync carries the snapshot there.

    Ray's controller writes ``experiment_state-*.json``, then the searcher's state, then asks the callbacks for
    theirs (:meth:`get_state`: the snapshot is signed and its signatures written to the experiment here), then
    syncs the staging directory to the experiment. (The callbacks' own file, written after they are asked, would
    go unsigned: every callback of this project returns no state, so Ray writes none.) The signatures are never in
    the staging directory, so Ray's sync (in the background, perhaps still carrying an older snapshot) never
    writes an older version of them over a newer one. The staging directory is read off the first trial
    (``Trial.storage``): Ray's first snapshot, in the step that adds the first trials, is taken before any callback
    sees one, so it is signed at that step's end. A restored experiment with nothing left to run takes its only
    snapshot before any callback sees a trial, so at its end the state is signed again. The key is read when
    signing, never kept: Ray pickles its callbacks into ``tuner.pkl``."""

    def __init__(self):
        self._storage = None  # the first trial's ray.train StorageContext
        self._signed: dict[str, list[str]] = {}  # file name -> the digests of its last versions, newest first
        self._sent = False  # whether a snapshot's signatures were written to the experiment by this driver

    def __getstate__(self):
        return {}  # a staging directory belongs to one driver's Ray session

    def __setstate__(self, state):
        self.__init__()

    def on_step_begin(self, iteration, trials, **info):
        self._learn(trials)

    def on_step_end(self, iteration, trials, **info):
        # Ray's first snapshot of a new experiment is taken in the step that adds its first trials, before any
        # callback has seen one (callbacks hear of no trial being added): sign it here, once, so that a driver
        # killed before Ray's next snapshot (10 s or more later) resumes.
        self._learn(trials)
        if not self._sent:
            self._sent = self._send(self._sign())

    def on_trial_start(self, iteration, trials, trial, **info):
        self._learn(trials)

    def get_state(self):
        self._sent = self._send(self._sign()) or self._sent
        return None  # nothing of ours to pickle into the experiment

    def on_experiment_end(self, trials, **info):
        self._learn(trials)
        self._send(self._sign())

    def _learn(self, trials) -> None:
        if self._storage is None and trials:
            self._storage = trials[0].storage

    def _sign(self) -> bytes | None:
        """Signs the staging directory's state files, keeping the digests of their last ``KEPT_VERSIONS`` versions;
        returns the signature file's bytes (None: no snapshot yet)."""
        staging = None if self._storage is None else Path(self._storage.experiment_driver_staging_path)
        if staging is None or not staging.is_dir() or not any(staging.glob("experiment_state-*.json")):
            return None
        (staging / SIGNATURES).unlink(missing_ok=True)  # a restore's copy of the experiment: Ray would sync it back
        current = sign_files(staging, restore_key())
        self._signed = {name: [d, *(old for old in self._signed.get(name, ()) if old != d)][:KEPT_VERSIONS]
                        for name, d in current.items()}
        return _encode(self._signed)

    def _send(self, signed: bytes | None) -> bool:
        """Writes the signatures into the experiment, under a temporary name first (a reader never sees half).
        A failed write is logged, not raised: the search goes on, and the next snapshot writes them again."""
        if signed is None:
            return False
        fs, path = self._storage.storage_filesystem, self._storage.experiment_fs_path
        part = f"{path}/{SIGNATURES}.{os.getpid()}.part"
        try:
            with fs.open_output_stream(part) as out:
                out.write(signed)
            fs.move(part, f"{path}/{SIGNATURES}")
        except OSError as e:
            logger.warning("%s/%s: could not write the signatures of Ray's snapshot (%s); a resume before the next "
                           "snapshot would refuse it", path, SIGNATURES, e)
            return False
        return True


def _signatures(experiment: storage.Location, name: str) -> dict[str, list[str]]:
    """A signature file: file name -> accepted digests (one string per name in files written before versions
    were kept)."""
    loc = storage.join(experiment, name)
    if not storage.is_file(loc):
        return {}
    try:
        signed = json.loads(storage.read_bytes(loc))
    except ValueError:
        raise UntrustedState(f"{loc}: not a signature file") from None
    if not isinstance(signed, dict):
        raise UntrustedState(f"{loc}: not a signature file")
    signed = {n: [d] if isinstance(d, str) else d for n, d in signed.items()}
    if not all(isinstance(d, list) and all(isinstance(x, str) for x in d) for d in signed.values()):
        raise UntrustedState(f"{loc}: not a signature file")
    return signed


__all__ = ["KEPT_VERSIONS", "KEY_ENV", "SIGNATURES", "SignState", "UntrustedState", "restore_key", "sign_experiment",
           "sign_files", "sign_tuner", "verify"]

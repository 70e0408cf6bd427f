"""Streaming from LitData's chunks: written by scripts/optimize_data.py, trained from with
data=streaming as any data set (pairs, eval, predict), resumed where it stopped, shared out
under DDP, and read from an object store (a local S3-compatible server)."""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from hydra.errors import MissingConfigException
from hydra.utils import instantiate

from src.eval import evaluate
from src.harness.errors import ConfigError
from src.harness.failures import run_reporting_errors
from src.predict import predict
from src.train import train
from tests.conftest import QUIET, ROOT, TINY_TRAINING, compose_config, optimize_chunks

litdata = pytest.importorskip("litdata", reason='data=streaming needs pip install -e ".[stream]"')


def streamed(chunks: Path | str, *overrides: str) -> list[str]:
    return [*TINY_TRAINING, "data=streaming", f"data.input_dir={chunks}", *overrides]


def test_digits_chunks_train_and_their_checkpoint_evaluates_and_predicts(digits_chunks, tmp_path):
    metrics = train(compose_config(streamed(digits_chunks, "model=lenet"), tmp_path / "train"))
    best = tmp_path / "train" / "checkpoints" / "best.ckpt"
    checkpoint = torch.load(best, weights_only=True)
    (state,) = [value for key, value in checkpoint.items() if key.endswith("StreamingDataModule")]
    source = instantiate(compose_config(["data=digits"], Path("unused")).data)
    source.setup("fit")  # what predict reads from a checkpoint of digits trained in memory
    assert state.keys() == source.state_dict().keys()
    assert all(str(state[k]) == str(v) for k, v in source.state_dict().items())
    # eval.py tests on the data the run recorded: the same test split, the same score
    evaluated = evaluate(compose_config([*QUIET, f"ckpt_path={best}"], tmp_path / "eval", "eval"))
    assert evaluated["test/acc"] == pytest.approx(metrics["test/acc"], abs=1e-6)
    images = np.random.default_rng(0).integers(0, 256, size=(3, 8, 8)).astype(np.uint8)
    np.save(tmp_path / "images.npy", images)
    overrides = [*QUIET, f"ckpt_path={best}", f"input={tmp_path / 'images.npy'}"]
    rows = list(
        csv.DictReader(predict(compose_config(overrides, tmp_path / "p", "predict")).open())
    )
    assert len(rows) == 3 and {row["class"] for row in rows} <= {str(c) for c in range(10)}


def test_the_chunks_hold_the_source_modules_normalized_splits_and_its_statistics(digits_chunks):
    source = instantiate(compose_config(["data=digits"], Path("unused")).data)
    source.setup("fit")
    chunks = instantiate(compose_config(streamed(digits_chunks), Path("unused")).data)
    chunks.setup("fit")
    state = chunks.state_dict()
    assert torch.equal(state["mean"], source.mean) and torch.equal(state["std"], source.std)
    assert state == {**source.state_dict(), "mean": state["mean"], "std": state["std"]}
    for name in ("train", "val", "test"):
        ours, theirs = chunks.datasets[name], source.datasets[name]
        assert len(ours) == len(theirs)
        for index in range(len(theirs)):
            assert all(map(torch.equal, ours[index], theirs[index])), (name, index)


def test_image_chunks_pair_with_lenet_and_mlp_and_refuse_linreg(digits_chunks, tmp_path):
    for model in ("lenet", "mlp"):
        cfg = compose_config(streamed(digits_chunks, f"model={model}"), tmp_path / model)
        assert train(cfg)["test/loss"] > 0
    cfg = compose_config(streamed(digits_chunks, "model=linreg"), tmp_path / "linreg")
    with pytest.raises(ConfigError, match=r"cannot train on this data .* model=lenet, model=mlp"):
        train(cfg)


def test_bad_input_stops_before_any_work_with_one_message(digits_chunks, tmp_path, monkeypatch):
    def error_of(*overrides: str, config_name: str = "train") -> str:
        quiet = QUIET if config_name == "train" else []
        cfg = compose_config([*quiet, *overrides], tmp_path / "run", config_name)
        task = train if config_name == "train" else optimize_data
        with pytest.raises(SystemExit) as stopped:
            run_reporting_errors(task, cfg)
        assert not (tmp_path / "run").exists()  # no run folder left behind
        return str(stopped.value)

    from scripts import optimize_data as script
    from scripts.optimize_data import optimize_data

    assert error_of("data=streaming") == (
        "error: data=streaming trains from the chunks that python scripts/optimize_data.py "
        "writes: give their folder or s3:// URL with data.input_dir=DIR_OR_URL."
    )
    (tmp_path / "empty").mkdir()
    for folder, problem in (("empty", "holds no metadata.json"), ("none", "does not exist")):
        message = error_of("data=streaming", f"data.input_dir={tmp_path / folder}")
        assert f"data.input_dir={tmp_path / folder} {problem}: is it a folder written by" in message
    message = error_of("data=streaming", f"data.input_dir={digits_chunks}", "data.num_outputs=3")
    assert "data: num_outputs=3 differs from 10 in metadata.json" in message
    # optimize_data.py: a used output folder is refused and left as it was
    used = tmp_path / "used"
    (used / "mine").mkdir(parents=True)
    message = error_of("data=digits", f"output_dir={used}", config_name="optimize_data")
    assert f"output_dir={used} already exists and is not an empty folder" in message
    assert [p.name for p in used.iterdir()] == ["mine"]
    # a failure while writing leaves neither the output folder nor a half-written one beside it
    real = script.write_split

    def fails_on_test(dataset, folder, *args):
        if folder.name == "test":
            raise OSError("disk full")
        return real(dataset, folder, *args)

    monkeypatch.setattr(script, "write_split", fails_on_test)
    message = error_of("data=digits", f"output_dir={tmp_path / 'new'}", config_name="optimize_data")
    assert "OSError: disk full" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "used"]


class Planted:
    """Unpickling it runs ``touch``: what a pickled value in foreign chunks could run."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def test_pickled_values_in_chunks_are_never_unpickled(digits_chunks, tmp_path):
    from litdata.streaming.writer import BinaryWriter

    planted = tmp_path / "unpickled"
    chunks = tmp_path / "chunks"
    writer = BinaryWriter(str(chunks / "test"), chunk_bytes="1MB")
    writer[0] = (torch.zeros(1, 28, 28), Planted(str(planted)))
    writer.done()
    writer.merge()
    (chunks / "metadata.json").write_text((digits_chunks / "metadata.json").read_text())
    datamodule = instantiate(compose_config(streamed(chunks), tmp_path).data)
    datamodule.setup("test")
    inputs, target = datamodule.datasets["test"][0]
    assert isinstance(target, bytes | memoryview) and not planted.exists()
    litdata.StreamingDataset(str(chunks / "test"))[0]  # LitData's default unpickles it
    assert planted.exists()


def test_a_missing_litdata_is_named_with_the_command_that_installs_it(monkeypatch):
    from src.data import streaming

    monkeypatch.setattr(streaming.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r'pip install -e "\.\[stream\]"'):
        streaming.read_metadata("/anywhere")


def test_optimize_data_refuses_an_unknown_data_set_naming_those_there_are(tmp_path):
    with pytest.raises(MissingConfigException, match=r"(?s)Could not find 'data/nope'.*\bdigits\b"):
        compose_config(["data=nope", f"output_dir={tmp_path / 'x'}"], tmp_path, "optimize_data")


# -- resume: LitData issue #775 -------------------------------------------------------------
class Batches(L.Callback):
    """Writes the targets of every training batch, in order, to ``path`` as training ends."""

    def __init__(self, path: str) -> None:
        self.path, self.seen = path, []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.seen.append(batch[1].tolist())

    def on_train_end(self, trainer, pl_module) -> None:
        Path(self.path).write_text(json.dumps(self.seen))


class StopAtStep(L.Callback):
    """Fails the run as a crash would, at the start of training step ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError("crashed")


def test_a_resumed_run_goes_on_at_the_next_batch_mid_epoch_and_after_an_epoch(tmp_path):
    """Lightning saves the StreamingDataLoader's position in a mid-epoch checkpoint and loads
    it back (LitData issue #775 reports it does not: it does here). From an end-of-epoch
    checkpoint Lightning loads no loader state; the next epoch's order is still the one an
    uninterrupted run takes. Either way the weights end equal to the uninterrupted run's."""
    chunks = optimize_chunks(tmp_path / "chunks", "data=synthetic", "data.num_samples=400")
    every_5_steps = [  # 288 training samples: 9 batches of 32 an epoch
        "+callbacks.batches._target_=tests.test_streaming.Batches",
        "+callbacks.steps._target_=lightning.pytorch.callbacks.ModelCheckpoint",
        "+callbacks.steps.dirpath=${paths.output_dir}/checkpoints",
        "+callbacks.steps.filename=step\\{step\\}",
        "+callbacks.steps.auto_insert_metric_name=false",
        "+callbacks.steps.every_n_train_steps=5",
        "+callbacks.steps.save_top_k=-1",
    ]
    common = [*QUIET, "data=streaming", f"data.input_dir={chunks}", "data.batch_size=32"]
    common += ["trainer.max_epochs=2", "trainer.limit_val_batches=1", "test=false", *every_5_steps]

    def run(name: str, *overrides: str) -> list[list[int]]:
        seen = f"+callbacks.batches.path={tmp_path / name}.json"
        train(compose_config([*common, seen, *overrides], tmp_path / name))
        return json.loads((tmp_path / f"{name}.json").read_text())

    def weights(name: str) -> dict:
        return torch.load(tmp_path / name / "checkpoints" / "last.ckpt")["state_dict"]

    whole = run("whole")
    stop = ["+callbacks.stop._target_=tests.test_streaming.StopAtStep", "+callbacks.stop.step=12"]
    with pytest.raises(RuntimeError, match="crashed"):
        run("stopped", *stop)
    stopped = tmp_path / "stopped" / "checkpoints"
    assert len(whole) == 18 and torch.load(stopped / "last.ckpt")["global_step"] == 9
    assert run("mid_epoch", f"ckpt_path={stopped / 'step10.ckpt'}") == whole[10:]
    assert run("epoch_end", f"ckpt_path={stopped / 'last.ckpt'}") == whole[9:]
    for resumed in ("mid_epoch", "epoch_end"):
        assert all(map(torch.equal, weights(resumed).values(), weights("whole").values()))


# -- DDP ----------------------------------------------------------------------------------
class SeenByRank(L.Callback):
    """Writes the inputs each rank trained on to ``folder/rank<N>.json`` (DDP processes)."""

    def __init__(self, folder: str) -> None:
        self.folder, self.seen = folder, []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.seen += [row.tolist() for row in batch[0]]

    def on_train_end(self, trainer, pl_module) -> None:
        Path(self.folder, f"rank{trainer.global_rank}.json").write_text(json.dumps(self.seen))


@pytest.mark.slow
def test_ddp_ranks_read_distinct_shares_of_the_chunks_into_one_run_folder(tmp_path):
    chunks = optimize_chunks(tmp_path / "chunks", "data=synthetic", "data.num_samples=500")
    seen = tmp_path / "seen"
    seen.mkdir()
    overrides = [*QUIET, "data=streaming", f"data.input_dir={chunks}", "trainer=ddp_sim"]
    overrides += ["data.batch_size=30", "trainer.max_epochs=1", "test=false"]
    overrides += ["+callbacks.seen._target_=tests.test_streaming.SeenByRank"]
    train(compose_config([*overrides, f"+callbacks.seen.folder={seen}"], tmp_path / "run"))
    ranks = [
        [tuple(row) for row in json.loads((seen / f"rank{r}.json").read_text())] for r in (0, 1)
    ]
    assert len(ranks[0]) == len(ranks[1]) >= 150  # 360 training samples: 180 each, whole batches
    assert not set(ranks[0]) & set(ranks[1])
    assert len(set(ranks[0])) == len(ranks[0])
    run = tmp_path / "run"
    assert sorted(p.name for p in run.iterdir()) == [
        "checkpoints",
        "config.yaml",
        "metrics.json",
        "run_info.json",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chunks", "run", "seen"]


# -- an object store ------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def s3_server(tmp_path, monkeypatch):
    """moto's S3-compatible server on 127.0.0.1, its endpoint and fake credentials in the
    environment (of this process and the ones it starts); stopped by its handle."""
    pytest.importorskip("moto.server", reason='the S3 tests need pip install -e ".[dev]"')
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(endpoint, timeout=2).close()
                break
            except (urllib.error.URLError, ConnectionError):
                assert server.poll() is None, "moto's server ended at start"
                assert time.monotonic() < deadline, "moto's server did not answer within 60 s"
                time.sleep(0.2)
        for name, value in {
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        }.items():
            monkeypatch.setenv(name, value)
        import boto3

        boto3.client("s3").create_bucket(Bucket="chunks")
        yield server
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)


def in_a_process() -> dict:
    """``subprocess.run`` arguments for a command as a user runs it, with this process's
    environment (the server's endpoint and credentials), bounded in time."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return {"cwd": ROOT, "env": env, "capture_output": True, "text": True, "timeout": 180}


class StopServer(L.Callback):
    """Stops the object store (the process ``pid``) as training starts, and waits until its
    port refuses connections: the test split's chunks are still to come."""

    def __init__(self, pid: int, port: int) -> None:
        self.pid, self.port = pid, port

    def on_train_start(self, trainer, pl_module) -> None:
        os.kill(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            except OSError:
                return
            time.sleep(0.1)
        raise AssertionError("the object store still answers 10 s after SIGTERM")


@pytest.mark.slow
def test_chunks_in_an_object_store_train_as_from_a_folder_and_a_stopped_store_is_reported(
    s3_server, digits_chunks, tmp_path
):
    url, cache = "s3://chunks/digits", f"data.cache_dir={tmp_path / 'cache'}"
    written = subprocess.run(
        [sys.executable, "scripts/optimize_data.py", "data=digits", f"output_dir={url}"]
        + [f"paths.log_dir={tmp_path / 'logs'}"],
        **in_a_process(),
    )
    assert written.returncode == 0, written.stderr[-2000:]
    from_store = train(compose_config(streamed(url, "model=lenet", cache), tmp_path / "store"))
    from_folder = train(compose_config(streamed(digits_chunks, "model=lenet"), tmp_path / "folder"))
    assert from_store["test/acc"] == from_folder["test/acc"]
    assert {path.name for path in (tmp_path / "cache").rglob("chunk-*.bin")} == {"chunk-0-0.bin"}
    # a prefix that holds files is refused before any work
    cfg = compose_config(["data=digits", f"output_dir={url}"], tmp_path / "run", "optimize_data")
    with pytest.raises(ConfigError, match=f"output_dir={url} already holds files"):
        from scripts.optimize_data import optimize_data

        optimize_data(cfg)
    # the store stops while training: its chunks fail to download, a bounded error
    port = os.environ["AWS_ENDPOINT_URL"].rpartition(":")[2]
    stop = ["+callbacks.stop._target_=tests.test_streaming.StopServer"]
    stop += [f"+callbacks.stop.pid={s3_server.pid}", f"+callbacks.stop.port={port}"]
    fresh = f"data.cache_dir={tmp_path / 'fresh'}"  # nothing downloaded yet, one try each
    cfg = compose_config(
        streamed(url, "model=lenet", fresh, "data.max_attempts=1", *stop), tmp_path / "stopped"
    )
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="Chunk prefetch .* Could not connect to the endpoint"):
        train(cfg)
    assert time.monotonic() - started < 60
    # and a run started while it is down says so in one line, in bounded time
    result = subprocess.run(
        [sys.executable, "src/train.py", *streamed(url), f"paths.log_dir={tmp_path / 'logs'}"],
        **in_a_process(),
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {url}/metadata.json could not be read: EndpointConnectionError: Could not "
        f'connect to the endpoint URL: "{os.environ["AWS_ENDPOINT_URL"]}/chunks/digits/'
        'metadata.json". Check the URL, the endpoint (AWS_ENDPOINT_URL for an S3-compatible '
        "store) and the credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or "
        "~/.aws/credentials)."
    )

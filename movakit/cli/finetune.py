"""`mova finetune`, `mova finetune-jobs get|watch|cancel|list` and `mova finetune-demo-data`: LoRA fine-tuning jobs
on a running gateway (docs/training.md).

`mova finetune --data DIR_OR_PREFIX --name NAME` uploads a local dataset folder first (checked here: metadata.json,
every clip readable and with sound), queues the job, prints its id and follows it (step, loss, learning rate, ETA)
until it ends; `--detach` returns after the id. Exit status as `mova submit`: with `--wait`, 0 only on success.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc

from movakit.api.v1 import common_pb2, training_pb2, training_pb2_grpc
from movakit.cli import UsageError
from movakit.cli.jobs import EXIT_CANCELLED, EXIT_FAILED, _gateway_option, _rpc_error, _state_name, read_token
from movakit.runtime.auth import with_token
from movakit.runtime.settings import SettingsError, check_address
from movakit.training.spec import OFFLOADS

CHUNK_BYTES = 3 << 20


def register(subparsers) -> None:
    p = subparsers.add_parser("finetune", help="train a LoRA adapter on a dataset (a job on the gateway)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _gateway_option(p)
    p.add_argument("--data", required=True,
                   help="dataset folder (metadata.json + videos with sound) to upload, or an uploaded datasets/... prefix")
    p.add_argument("--name", required=True, help="the adapter's name once trained ([A-Za-z0-9._-], 1..128)")
    p.add_argument("--rank", type=int, default=0, help="LoRA rank (default 16)")
    p.add_argument("--alpha", type=float, default=0.0, help="LoRA alpha (default: the rank)")
    p.add_argument("--steps", type=int, default=0, help="optimizer updates (default 1000)")
    p.add_argument("--lr", type=float, default=0.0, help="peak learning rate (default 1e-4)")
    p.add_argument("--warmup-steps", type=int, default=0, help="linear warmup updates (default 0)")
    p.add_argument("--grad-accum", type=int, default=0, help="micro-batches per update (default 4)")
    p.add_argument("--components", nargs="+", default=[],
                   help="video_dit video_dit_2 audio_dit dual_tower_bridge (default: all four)")
    p.add_argument("--checkpoint-every", type=int, default=0, help="updates between checkpoints (default 100)")
    p.add_argument("--seed", type=int, default=0, help="seed of the initialisation, order, timesteps, noise (42)")
    p.add_argument("--gradient-checkpointing", action=argparse.BooleanOptionalAction, default=None,
                   help="recompute each DiT block in the backward pass instead of keeping its activations "
                        "(default on)")
    p.add_argument("--offload", choices=tuple(OFFLOADS), default=None,
                   help="frozen parts kept in host RAM: none, model (text encoder, VAEs and the video expert "
                        "not training this micro-batch), model-and-activations (also the block inputs kept for "
                        "the backward pass), blocks (also every DiT and bridge block's weights, copied in only "
                        "while the block runs: the release model in one 24 GB GPU) (default none)")
    p.add_argument("--idempotency-key", default="", help="the same key always returns the same job")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--wait", action="store_true", help="exit 0 only when the job succeeded")
    mode.add_argument("--detach", action="store_true", help="print the job id and return at once")
    p.set_defaults(func=_finetune)

    jobs = subparsers.add_parser("finetune-jobs", help="inspect, follow, cancel and list fine-tuning jobs")
    sub = jobs.add_subparsers(dest="finetune_command", required=True, metavar="ACTION")
    for action, text in (("get", "show one job"), ("watch", "follow a job to its end"),
                         ("cancel", "stop a job after its current update")):
        cmd = sub.add_parser(action, help=text)
        _gateway_option(cmd)
        cmd.add_argument("job_id")
        cmd.set_defaults(func=_job_action, action=action)
    listing = sub.add_parser("list", help="list fine-tuning jobs, newest first")
    _gateway_option(listing)
    listing.set_defaults(func=_list)

    demo = subparsers.add_parser("finetune-demo-data", help="write a small dataset (test patterns with tones)")
    demo.add_argument("folder", type=Path)
    demo.add_argument("--clips", type=int, default=3, help="number of clips (default 3)")
    demo.set_defaults(func=_demo_data)


def _stub(args) -> tuple[grpc.Channel, training_pb2_grpc.FineTuneServiceStub]:
    try:
        check_address("--gateway", args.gateway)
    except SettingsError as exc:
        raise UsageError(str(exc)) from None
    channel = with_token(grpc.insecure_channel(args.gateway), read_token(args.state_dir))
    return channel, training_pb2_grpc.FineTuneServiceStub(channel)


def _local_dataset(folder: Path) -> list[Path]:
    """The files to upload, after the checks the client can make (UsageError naming the bad clip)."""
    from movakit.media import MediaError, probe
    from movakit.training.data import METADATA_FILE, DatasetError, read_metadata

    try:
        entries = read_metadata(folder)
    except DatasetError as exc:
        raise UsageError(f"--data: {exc}") from None
    for entry in entries:
        try:
            info = probe(entry.path)
        except (MediaError, FileNotFoundError) as exc:
            raise UsageError(f"--data: {entry.video_path}: not a readable video ({exc})") from None
        if info.audio_codec is None:
            raise UsageError(f"--data: {entry.video_path}: has no audio stream (training needs the clip's sound)")
    return [folder / METADATA_FILE, *(e.path for e in entries)]


def _chunks(dataset: str, folder: Path, files: list[Path]) -> Iterator[training_pb2.DatasetChunk]:
    for path in files:
        relative = path.resolve().relative_to(folder.resolve()).as_posix()
        data = path.read_bytes()
        for start in range(0, max(len(data), 1), CHUNK_BYTES):
            yield training_pb2.DatasetChunk(dataset=dataset, path=relative, data=data[start:start + CHUNK_BYTES])


def _upload(stub: training_pb2_grpc.FineTuneServiceStub, folder: Path, name: str) -> str:
    files = _local_dataset(folder)
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.read_bytes())
    dataset = f"{name}-{digest.hexdigest()[:12]}"  # content-addressed: the same folder uploads to the same prefix
    print(f"uploading {len(files)} files as datasets/{dataset}", file=sys.stderr)
    return stub.UploadDataset(_chunks(dataset, folder, files), timeout=3600).dataset


def _finetune(args) -> int:
    for flag in ("rank", "steps", "warmup_steps", "grad_accum", "checkpoint_every", "seed"):
        if getattr(args, flag) < 0:
            raise UsageError(f"--{flag.replace('_', '-')}: must not be negative, got {getattr(args, flag)}")
    channel, stub = _stub(args)
    with channel:
        try:
            folder = Path(args.data)
            dataset = _upload(stub, folder, args.name) if folder.is_dir() else args.data
            job = stub.Submit(training_pb2.FineTuneRequest(
                name=args.name, dataset=dataset, rank=args.rank, alpha=args.alpha, steps=args.steps,
                learning_rate=args.lr, warmup_steps=args.warmup_steps, grad_accum=args.grad_accum,
                components=args.components, checkpoint_every=args.checkpoint_every, seed=args.seed,
                gradient_checkpointing=args.gradient_checkpointing,
                offload=OFFLOADS[args.offload] if args.offload else None,
                idempotency_key=args.idempotency_key), timeout=60)
        except grpc.RpcError as exc:
            return _rpc_error(exc)
        print(job.job_id, flush=True)
        if args.detach:
            return 0
        try:
            outcome = follow(stub, job.job_id)
        except grpc.RpcError as exc:
            return _rpc_error(exc)
    return outcome if args.wait else 0


def describe(job: training_pb2.FineTuneJob) -> str:
    text = f"{job.job_id} {_state_name(job.state)}: step {job.step}/{job.total_steps}"
    if job.step:
        text += f", loss {job.loss:.4f} (video {job.video_loss:.4f}, audio {job.audio_loss:.4f}), lr {job.learning_rate:.2e}"
        if job.state == common_pb2.JOB_STATE_RUNNING:
            text += f", eta {job.eta_s:.0f} s"
    if job.resumed_from_step:
        text += f" (resumed from step {job.resumed_from_step})"
    if job.error:
        text += f"; {job.error}"
    if job.adapter:
        text += f"; adapter {job.adapter!r} registered"
    return text


def follow(stub: training_pb2_grpc.FineTuneServiceStub, job_id: str, *, err=None) -> int:
    """Prints a line per change on `err`; 0 on success, EXIT_FAILED on failure, EXIT_CANCELLED when cancelled."""
    err = err or sys.stderr
    job = None
    for job in stub.Watch(training_pb2.FineTuneJobRequest(job_id=job_id)):
        print(describe(job), file=err, flush=True)
    if job is not None and job.state == common_pb2.JOB_STATE_SUCCEEDED:
        return 0
    return EXIT_CANCELLED if job is not None and job.state == common_pb2.JOB_STATE_CANCELLED else EXIT_FAILED


def _job_action(args) -> int:
    channel, stub = _stub(args)
    with channel:
        try:
            if args.action == "watch":
                return follow(stub, args.job_id)
            call = stub.Get if args.action == "get" else stub.Cancel
            print(describe(call(training_pb2.FineTuneJobRequest(job_id=args.job_id), timeout=30)))
        except grpc.RpcError as exc:
            return _rpc_error(exc)
    return 0


def _list(args) -> int:
    channel, stub = _stub(args)
    with channel:
        token = ""
        try:
            while True:
                page = stub.List(training_pb2.ListFineTuneJobsRequest(page_token=token), timeout=30)
                for job in page.jobs:
                    print(describe(job))
                token = page.next_page_token
                if not token:
                    return 0
        except grpc.RpcError as exc:
            return _rpc_error(exc)


def _demo_data(args) -> int:
    from movakit.training.demo_data import write_demo_dataset

    if not 1 <= args.clips <= 100:
        raise UsageError(f"--clips: must be in 1..100, got {args.clips}")
    root = write_demo_dataset(args.folder, clips=args.clips)
    print(f"wrote {args.clips} clips and metadata.json to {root}")
    return 0

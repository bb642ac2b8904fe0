"""`mova submit` and `mova jobs get|watch|cancel|list`: the job API of a running gateway, from the command line.

`mova submit` prints the job id (first line of stdout), then follows the job with a progress bar on stderr
until it ends and prints the artifact URLs; `--detach` returns right after the id. The exit status is 0 when
the job was accepted, except with `--wait`: then 0 only when the job succeeded (1 failed, 3 cancelled).
When the gateway answers RESOURCE_EXHAUSTED, `mova submit` waits the retry delay the answer carries
(google.rpc.RetryInfo; doubled on each further refusal, at most 600 s) and tries again, `--retries` times.

Every call sends the caller's token (`authorization: Bearer <token>`): $MOVA_TOKEN, else the `token` file that
`mova stack up` wrote in its state folder (--state-dir).
"""

from __future__ import annotations

import os
import random
import sys
import time
from pathlib import Path

import grpc
from google.protobuf.json_format import MessageToJson
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from movakit.api.v1 import common_pb2, events_pb2, gateway_pb2, gateway_pb2_grpc
from movakit import request as contract
from movakit.cli import UsageError, request_options
from movakit.cli.stack import DEFAULT_STATE_DIR
from movakit.runtime.auth import with_token
from movakit.runtime.settings import SettingsError, check_address

DEFAULT_GATEWAY = "127.0.0.1:50051"
EXIT_FAILED = 1
EXIT_CANCELLED = 3
_STATES = {name.removeprefix("JOB_STATE_").lower(): value for name, value in common_pb2.JobState.items()
           if value != common_pb2.JOB_STATE_UNSPECIFIED}  # --state choices; _state_name is the inverse
_BAR_WIDTH = 30
TOKEN_ENV = "MOVA_TOKEN"
MAX_RETRY_WAIT_S = 600.0


def register(subparsers) -> None:
    submit = subparsers.add_parser("submit", help="submit a job to the gateway and follow it")
    _gateway_option(submit)
    request_options.add_options(submit)  # the request options, the same as `mova generate`'s
    submit.add_argument("--idempotency-key", default="", help="the same key always returns the same job")
    submit.add_argument("--retries", type=int, default=5,
                        help="times to retry when the queue is full, after the delay the gateway names (default 5)")
    mode = submit.add_mutually_exclusive_group()
    mode.add_argument("--wait", action="store_true", help="exit 0 only when the job succeeded")
    mode.add_argument("--detach", action="store_true", help="print the job id and return at once")
    submit.set_defaults(func=_submit)

    jobs = subparsers.add_parser("jobs", help="inspect, follow, cancel and list jobs of the gateway")
    sub = jobs.add_subparsers(dest="jobs_command", required=True, metavar="ACTION")
    get = sub.add_parser("get", help="show one job")
    _gateway_option(get)
    get.add_argument("job_id")
    get.add_argument("--json", action="store_true", help="print the Job message as JSON")
    get.set_defaults(func=_get)
    watch = sub.add_parser("watch", help="follow a job to its end (exit 0 only on success)")
    _gateway_option(watch)
    watch.add_argument("job_id")
    watch.set_defaults(func=_watch)
    cancel = sub.add_parser("cancel", help="cancel a job at its next step or stage boundary")
    _gateway_option(cancel)
    cancel.add_argument("job_id")
    cancel.set_defaults(func=_cancel)
    listing = sub.add_parser("list", help="list jobs, newest first")
    _gateway_option(listing)
    listing.add_argument("--state", choices=sorted(_STATES), help="only jobs in this state")
    listing.add_argument("--page-size", type=int, default=20, help="jobs per page, 1..100")
    listing.add_argument("--page-token", default="", help="token printed by the previous page")
    listing.add_argument("--all", action="store_true", help="follow every page")
    listing.set_defaults(func=_list)


def _gateway_option(parser) -> None:
    parser.add_argument("--gateway", default=DEFAULT_GATEWAY, help=f"gateway host:port (default {DEFAULT_GATEWAY})")
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR,
                        help=f"the stack folder holding `token`, used when ${TOKEN_ENV} is unset "
                             f"(default {DEFAULT_STATE_DIR})")


def read_token(state_dir: Path) -> str:
    """$MOVA_TOKEN, else <state_dir>/token; UsageError when neither gives one."""
    token = os.environ.get(TOKEN_ENV, "").strip()
    if token:
        return token
    path = Path(state_dir) / "token"
    try:
        token = path.read_text().strip()
    except OSError:
        token = ""
    if not token:
        raise UsageError(f"no token: set ${TOKEN_ENV} or run `mova stack up` (which writes {path})")
    return token


def _stub(args) -> tuple[grpc.Channel, gateway_pb2_grpc.JobServiceStub]:
    try:
        check_address("--gateway", args.gateway)
    except SettingsError as exc:
        raise UsageError(str(exc)) from None
    token = read_token(args.state_dir)
    channel = with_token(grpc.insecure_channel(
        args.gateway, options=[("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)]
    ), token)
    return channel, gateway_pb2_grpc.JobServiceStub(channel)


def retry_delay_s(error: grpc.RpcError) -> float | None:
    """The google.rpc.RetryInfo delay an error carries, in seconds; None when it carries none."""
    status = rpc_status.from_call(error)
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return info.retry_delay.ToNanoseconds() / 1e9
    return None


def submit_with_retries(stub, request: gateway_pb2.SubmitRequest, retries: int, *, sleep=time.sleep, err=None):
    """Submit, retrying a RESOURCE_EXHAUSTED answer up to `retries` times: it waits the RetryInfo delay (1 s when
    the answer has none), doubled on each further refusal, plus up to 10 % jitter, at most MAX_RETRY_WAIT_S."""
    err = err or sys.stderr
    for attempt in range(retries + 1):
        try:
            return stub.Submit(request, timeout=60)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED or attempt == retries:
                raise
            wait = min(MAX_RETRY_WAIT_S, (retry_delay_s(exc) or 1.0) * 2**attempt * (1 + random.random() / 10))
            print(f"mova: {exc.details()}; retrying in {wait:.1f} s ({attempt + 1}/{retries})", file=err, flush=True)
            sleep(wait)
    raise AssertionError("unreachable")


def _state_name(state: int) -> str:
    return common_pb2.JobState.Name(state).removeprefix("JOB_STATE_").lower()


def _stage_name(stage: int) -> str:
    return common_pb2.Stage.Name(stage).removeprefix("STAGE_").lower()


def _segment(index: int, count: int) -> str:
    """"segment 2/3 " for a long video's segment (index from 0), "" for a one-clip job."""
    return f"segment {index + 1}/{count} " if count else ""


def _step_line(s: events_pb2.DenoiseStep) -> str:
    return f"{_segment(s.segment, s.segment_count)}denoise: step {s.step}/{s.total}, eta {s.eta_s:.0f} s"


def _rpc_error(exc: grpc.RpcError) -> int:
    print(f"mova: error: {exc.code().name}: {exc.details()}", file=sys.stderr)
    return 2 if exc.code() == grpc.StatusCode.INVALID_ARGUMENT else 1


# ---- submit ----------------------------------------------------------------------------------------------------
def build_request(args) -> gateway_pb2.SubmitRequest:
    """The SubmitRequest for parsed `mova submit` options; the options the client can judge on their own are
    checked here with the contract's words (UsageError), the rest by the gateway against its checkpoint."""
    if args.retries < 0:
        raise UsageError(f"--retries: must not be negative, got {args.retries}")
    try:
        req = request_options.from_options(args)
        image = b""
        if args.image is not None:
            path = Path(args.image)
            if not path.is_file():
                raise UsageError(f"--image: no such file: {path}")
            image = path.read_bytes()
            contract.validate_image(image, field="--image")
        contract.validate_idempotency_key(args.idempotency_key, field="--idempotency-key")
    except contract.InvalidArgument as exc:
        raise UsageError(str(exc)) from None
    return gateway_pb2.SubmitRequest(params=contract.to_proto(req), image=image, idempotency_key=args.idempotency_key)


def _submit(args) -> int:
    request = build_request(args)
    channel, stub = _stub(args)
    with channel:
        try:
            response = submit_with_retries(stub, request, args.retries)
        except grpc.RpcError as exc:
            return _rpc_error(exc)
        print(response.job_id, flush=True)
        if response.existing:
            print(f"(idempotency key already used: job {response.job_id})", file=sys.stderr)
        if args.detach:
            return 0
        try:
            outcome = follow(stub, response.job_id)
        except grpc.RpcError as exc:
            return _rpc_error(exc)
        except KeyboardInterrupt:
            return _detached(response.job_id)
    return outcome if args.wait else 0


def _detached(job_id: str) -> int:
    print(f"\ndetached: job {job_id} keeps running; follow it with `mova jobs watch {job_id}`", file=sys.stderr)
    return 130


# ---- following -------------------------------------------------------------------------------------------------
def follow(stub: gateway_pb2_grpc.JobServiceStub, job_id: str, *, out=None, err=None) -> int:
    """Streams the job's events, drawing progress on `err` (stderr); prints the artifact URLs on `out` (stdout)
    when it succeeds. Returns 0 on success, EXIT_FAILED on failure, EXIT_CANCELLED when cancelled."""
    out = out or sys.stdout
    err = err or sys.stderr
    bar = _Progress(err)
    outcome = EXIT_FAILED
    for event in stub.Watch(gateway_pb2.WatchJobRequest(job_id=job_id)):
        kind = event.WhichOneof("kind")
        if kind == "denoise_step":
            bar.step(event.denoise_step)
            continue
        bar.line(describe(event))
        if kind == "succeeded":
            for artifact in event.succeeded.artifacts:
                print(f"{artifact.kind}: {artifact.url}", file=out, flush=True)
            outcome = 0
        elif kind == "cancelled":
            outcome = EXIT_CANCELLED
    bar.close()
    return outcome


def describe(event: events_pb2.JobEvent) -> str:
    """One human line for an event."""
    kind = event.WhichOneof("kind")
    if kind in ("stage_started", "stage_finished"):
        info = getattr(event, kind)
        stage = (f"segment {info.segment + 1} " if info.segment else "") + _stage_name(info.stage)
        if kind == "stage_started":
            return f"{stage}: started" + (f" on {info.worker}" if info.worker else "")
        return f"{stage}: finished in {info.duration_s:.1f} s" + (" (outputs existed, skipped)" if info.skipped else "")
    if kind == "prompt_enhanced":
        pe = event.prompt_enhanced
        lines = [f"enhancer: {n}" for n in pe.notes]
        note = f" (kept the original: {pe.fallback_reason})" if pe.fallback_reason else ""
        return "\n".join([*lines, f"prompt ({pe.backend}): {pe.prompt}{note}"])
    if kind == "failed":
        return f"FAILED: {event.failed.reason}"
    if kind == "succeeded":
        return f"succeeded: {len(event.succeeded.artifacts)} artifacts"
    if kind == "denoise_step":
        return _step_line(event.denoise_step)
    return kind.replace("_", " ")


class _Progress:
    """A one-line bar redrawn in place on a terminal; plain lines otherwise."""

    def __init__(self, stream) -> None:
        self._stream = stream
        self._tty = stream.isatty()
        self._open = False

    def step(self, s: events_pb2.DenoiseStep) -> None:
        if not self._tty:
            self.line(_step_line(s))
            return
        filled = round(_BAR_WIDTH * s.step / max(s.total, 1))
        self._stream.write(f"\r{_segment(s.segment, s.segment_count)}denoise [{'#' * filled}"
                           f"{'.' * (_BAR_WIDTH - filled)}] {s.step}/{s.total} "
                           f"eta {s.eta_s:.0f} s ")
        self._stream.flush()
        self._open = True

    def line(self, text: str) -> None:
        self.close()
        print(text, file=self._stream, flush=True)

    def close(self) -> None:
        if self._open:
            self._stream.write("\n")
            self._open = False


# ---- jobs get|watch|cancel|list --------------------------------------------------------------------------------
def format_job(job: common_pb2.Job) -> str:
    state = _state_name(job.state)
    stage = _stage_name(job.stage)
    p = job.params
    lines = [
        f"job       {job.job_id}",
        f"state     {state}" + (" (cancel requested)" if job.cancel_requested and state != "cancelled" else ""),
        f"stage     {_segment(job.segment, job.segment_count)}{stage}"
        + (f"  step {job.step}/{job.total_steps}, eta {job.eta_s:.0f} s" if job.step else ""),
        f"params    {p.height}x{p.width}, {p.num_frames} frames @ {p.fps:g} fps, {p.num_inference_steps} steps, "
        f"{contract.guidance_summary(contract.from_proto(p))}, seed {p.seed}"
        + (f", {p.duration_s:g} s in {job.segment_count} segments" if job.segment_count else ""),
        f"prompt    {job.effective_prompt or p.prompt}",
        f"created   {job.created_at.ToJsonString()}",
    ]
    if job.idempotency_key:
        lines.append(f"key       {job.idempotency_key}")
    if job.failure_reason:
        lines.append(f"reason    {job.failure_reason}")
    lines.extend(f"{a.kind:<9} {a.url or a.ref.key}" for a in job.artifacts)
    return "\n".join(lines)


def _get(args) -> int:
    channel, stub = _stub(args)
    with channel:
        try:
            job = stub.Get(gateway_pb2.GetJobRequest(job_id=args.job_id), timeout=30)
        except grpc.RpcError as exc:
            return _rpc_error(exc)
    print(MessageToJson(job) if args.json else format_job(job))
    return 0


def _watch(args) -> int:
    channel, stub = _stub(args)
    with channel:
        try:
            return follow(stub, args.job_id)
        except grpc.RpcError as exc:
            return _rpc_error(exc)
        except KeyboardInterrupt:
            return _detached(args.job_id)


def _cancel(args) -> int:
    channel, stub = _stub(args)
    with channel:
        try:
            job = stub.Cancel(gateway_pb2.CancelJobRequest(job_id=args.job_id), timeout=30)
        except grpc.RpcError as exc:
            return _rpc_error(exc)
    print(format_job(job))
    return 0


def _list(args) -> int:
    if not 1 <= args.page_size <= 100:
        raise UsageError(f"--page-size: {args.page_size} is outside 1..100")
    state = _STATES[args.state] if args.state else common_pb2.JOB_STATE_UNSPECIFIED
    channel, stub = _stub(args)
    token = args.page_token
    with channel:
        while True:
            try:
                page = stub.List(gateway_pb2.ListJobsRequest(page_size=args.page_size, page_token=token, state=state),
                                 timeout=30)
            except grpc.RpcError as exc:
                return _rpc_error(exc)
            for job in page.jobs:
                name = _state_name(job.state)
                progress = f"{job.step}/{job.total_steps}" if job.total_steps else "-"
                print(f"{job.job_id}  {name:<10} {progress:>7}  {job.created_at.ToJsonString()}  "
                      f"{(job.effective_prompt or job.params.prompt)[:60]}")
            token = page.next_page_token
            if not token or not args.all:
                break
    if token:
        print(f"next page: --page-token {token}", file=sys.stderr)
    return 0

"""`mova adapters upload|list|get|delete|export`: the LoRA adapter registry of a running gateway, and conversions.

upload reads an adapter in either official format or ours, checks it against a checkpoint (default: the tiny
demo one) without loading weights, records that checkpoint's base identity and sends it to the gateway.
export writes an adapter (a local path, or a registry name fetched from the gateway) in the official accelerate
form (`--format official`: the official inference scripts load it) or in ours (`--format movakit`).
Every call to the gateway sends the caller's token, read as the job commands read it ($MOVA_TOKEN, else the
`token` file in --state-dir); the registry it reaches is that tenant's.
"""

from __future__ import annotations

import sys
import urllib.request
from pathlib import Path

import grpc

from movakit.api.v1 import adapters_pb2, adapters_pb2_grpc
from movakit.cli import UsageError
from movakit.cli.jobs import _gateway_option, _rpc_error, read_token
from movakit.runtime.auth import with_token
from movakit.runtime.settings import SettingsError, check_address

CHUNK_BYTES = 1 << 20  # weight bytes per upload message


def register(subparsers) -> None:
    adapters = subparsers.add_parser("adapters", help="LoRA adapters: the gateway's registry, and conversions")
    sub = adapters.add_subparsers(dest="adapters_command", required=True, metavar="ACTION")
    upload = sub.add_parser("upload", help="check an adapter against a checkpoint and store it in the registry")
    _gateway_option(upload)
    upload.add_argument("path", type=Path, help="official folder / lora_weights.pt, or our adapter folder")
    upload.add_argument("--name", required=True, help="registry name: jobs use it as --lora NAME")
    upload.add_argument("--checkpoint", type=Path, help="the MOVA checkpoint it is for (default: tiny demo one)")
    upload.add_argument("--replace", action="store_true", help="overwrite an adapter of the same name")
    upload.set_defaults(func=_upload)
    listing = sub.add_parser("list", help="list the registry's adapters")
    _gateway_option(listing)
    listing.set_defaults(func=_list)
    get = sub.add_parser("get", help="show one adapter (and download it with --output)")
    _gateway_option(get)
    get.add_argument("name")
    get.add_argument("--output", type=Path, help="download into this folder (our stored form)")
    get.set_defaults(func=_get)
    delete = sub.add_parser("delete", help="remove an adapter from the registry")
    _gateway_option(delete)
    delete.add_argument("name")
    delete.set_defaults(func=_delete)
    export = sub.add_parser("export", help="write an adapter in the official accelerate form or ours")
    _gateway_option(export)
    export.add_argument("source", help="adapter path, or a registry name")
    export.add_argument("--format", choices=("official", "movakit"), default="official",
                        help="official: lora_weights.pt + lora_config.pt (default); movakit: safetensors + manifest")
    export.add_argument("--output", type=Path, required=True, help="folder to write")
    export.set_defaults(func=_export)
    random = sub.add_parser("random", help="write a RANDOM adapter in the official accelerate form (to try the tools)")
    random.add_argument("--output", type=Path, required=True, help="folder to write")
    random.add_argument("--checkpoint", type=Path, help="the MOVA checkpoint it is for (default: tiny demo one)")
    random.add_argument("--rank", type=int, default=4, help="rank (default 4)")
    random.add_argument("--targets", choices=("accelerate", "attention"), default="accelerate",
                        help="accelerate: every DiT block linear + bridge q/k/v/o (default); attention: q/k/v/o only")
    random.add_argument("--seed", type=int, default=0)
    random.set_defaults(func=_random)


def _stub(gateway: str, token: str) -> tuple[grpc.Channel, adapters_pb2_grpc.AdapterServiceStub]:
    try:
        check_address("--gateway", gateway)
    except SettingsError as exc:
        raise UsageError(str(exc)) from None
    channel = with_token(grpc.insecure_channel(gateway), token)
    return channel, adapters_pb2_grpc.AdapterServiceStub(channel)


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def format_info(info: adapters_pb2.AdapterInfo) -> str:
    return (f"{info.name}: rank {info.rank}, alpha {info.alpha:g}, targets {info.targets}, {info.layers} layers, "
            f"{info.parameters} parameters, base {info.base[:19]}, sha256 {info.sha256[:12]}")


def read_local(path: Path):
    """A local adapter in any format; UsageError naming the path on a bad one."""
    from movakit.lora.adapter import AdapterError
    from movakit.lora.store import read_any

    try:
        return read_any(path)
    except AdapterError as exc:
        raise UsageError(str(exc)) from None


def fetch(gateway: str, name: str, token: str):
    """The named adapter from the token's tenant's registry on the gateway (manifest over gRPC, weights from the
    presigned URL)."""
    from movakit.lora.adapter import AdapterError
    from movakit.lora.store import decode

    channel, stub = _stub(gateway, token)
    with channel:
        try:
            reply = stub.GetAdapter(adapters_pb2.GetAdapterRequest(name=name), timeout=30)
        except grpc.RpcError as exc:
            raise UsageError(f"adapter {name!r} from {gateway}: {exc.code().name}: {exc.details()}") from None
    with urllib.request.urlopen(reply.weights_url, timeout=300) as response:
        weights = response.read()
    try:
        return decode(reply.manifest, weights, f"adapter {name!r}")
    except AdapterError as exc:
        raise UsageError(str(exc)) from None


def _checkpoint(path: Path | None):
    """The MovaCheckpoint of --checkpoint (default: the tiny demo one)."""
    from movakit.loading import CheckpointError, MovaCheckpoint

    if path is None:
        from movakit.loading.demo import default_demo_checkpoint

        path = default_demo_checkpoint()
    try:
        return MovaCheckpoint(path)
    except CheckpointError as exc:
        raise UsageError(f"--checkpoint: {exc}") from None


def _upload(args) -> int:
    from movakit.loading import CheckpointError
    from movakit.lora.adapter import AdapterError
    from movakit.lora.base_model import for_checkpoint
    from movakit.lora.store import encode

    adapter = read_local(args.path)
    try:
        adapter = for_checkpoint(adapter, _checkpoint(args.checkpoint))
    except CheckpointError as exc:
        raise UsageError(f"--checkpoint: {exc}") from None
    except AdapterError as exc:
        raise UsageError(f"{args.path}: {exc}") from None
    for note in adapter.notes:
        _say(f"note: {note}")
    manifest, weights = encode(adapter)

    def chunks():
        yield adapters_pb2.UploadAdapterChunk(name=args.name, manifest=manifest, replace=args.replace,
                                              weights=weights[:CHUNK_BYTES])
        for start in range(CHUNK_BYTES, len(weights), CHUNK_BYTES):
            yield adapters_pb2.UploadAdapterChunk(weights=weights[start:start + CHUNK_BYTES])

    channel, stub = _stub(args.gateway, read_token(args.state_dir))
    with channel:
        try:
            info = stub.UploadAdapter(chunks(), timeout=600)
        except grpc.RpcError as exc:
            return _rpc_error(exc)
    print(format_info(info))
    return 0


def _list(args) -> int:
    channel, stub = _stub(args.gateway, read_token(args.state_dir))
    with channel:
        try:
            reply = stub.ListAdapters(adapters_pb2.ListAdaptersRequest(), timeout=30)
        except grpc.RpcError as exc:
            return _rpc_error(exc)
    for info in reply.adapters:
        print(format_info(info))
    if not reply.adapters:
        _say("(no adapters)")
    return 0


def _get(args) -> int:
    channel, stub = _stub(args.gateway, read_token(args.state_dir))
    with channel:
        try:
            reply = stub.GetAdapter(adapters_pb2.GetAdapterRequest(name=args.name), timeout=30)
        except grpc.RpcError as exc:
            return _rpc_error(exc)
    print(format_info(reply.info))
    for note in reply.info.notes:
        print(f"  note: {note}")
    if args.output is not None:
        from movakit.lora.store import write_folder

        print(f"saved: {write_folder(fetch(args.gateway, args.name, read_token(args.state_dir)), args.output)}")
    return 0


def _delete(args) -> int:
    channel, stub = _stub(args.gateway, read_token(args.state_dir))
    with channel:
        try:
            stub.DeleteAdapter(adapters_pb2.DeleteAdapterRequest(name=args.name), timeout=30)
        except grpc.RpcError as exc:
            return _rpc_error(exc)
    print(f"deleted: {args.name}")
    return 0


def _export(args) -> int:
    from movakit.lora.official import write_accelerate
    from movakit.lora.store import write_folder

    source = Path(args.source)
    adapter = read_local(source) if source.exists() else fetch(args.gateway, args.source, read_token(args.state_dir))
    for note in adapter.notes:
        _say(f"note: {note}")
    folder = write_accelerate(adapter, args.output) if args.format == "official" else write_folder(adapter, args.output)
    print(f"{args.format}: {folder}")
    return 0


def _random(args) -> int:
    import torch

    from movakit.lora.adapter import LoraAdapter
    from movakit.lora.base_model import meta_components
    from movakit.lora.official import write_accelerate
    from movakit.lora.targets import target_layers

    if not 1 <= args.rank <= 1024:
        raise UsageError(f"--rank: must be in [1, 1024], got {args.rank}")
    g = torch.Generator().manual_seed(args.seed)
    layers = {key: (torch.randn(args.rank, layer.in_features, generator=g) * 0.1,
                    torch.randn(layer.out_features, args.rank, generator=g) * 0.1)
              for key, layer in target_layers(meta_components(_checkpoint(args.checkpoint)), args.targets).items()}
    adapter = LoraAdapter(rank=args.rank, alpha=float(args.rank), targets=args.targets, layers=layers)
    folder = write_accelerate(adapter, args.output)
    _say(f"RANDOM weights: {len(layers)} layers; the adapter changes the output, into noise")
    print(f"official: {folder}")
    return 0

"""Conversion propensity: P(goal | customer features, channel, creative), a PyTorch MLP.

Pure torch/numpy (no Django), so the same code trains in a Celery worker on the `gpu` queue and
from the command line on a GPU box (`python -m mlcore.engine.train`).

The model: numeric features standardised inside the model (mean/scale buffers fitted on the
training split, so a stored artifact scores raw features and the glue never keeps a scaler of
its own), concatenated with a channel and a creative embedding, through ReLU layers to one logit.
Channel x feature interactions ("SMS works for recent buyers") come from the hidden layers.

Training on `cuda` keeps the whole data set resident on the GPU and draws shuffled index batches
from it: no DataLoader, no host-to-device copy per step, which is what makes millions of samples
per second possible for a model this small. Large batches (65,536 by default), bf16 autocast,
fused AdamW, and the whole step (gather, forward, backward, optimizer) captured once as a CUDA
graph and replayed: the step is ~100 tiny kernels whose launches, not arithmetic, bound an eager
loop (measured on an H100: 25M samples/s eager, 99M with the graph, same AUC). torch.compile is
optional and off: it did not beat eager here (22.6M). Channel and creative embeddings are one-hot
matrix products for small vocabularies, since the embedding lookup's CUDA backward syncs with the
host and cannot be captured. On the CPU the same loop runs eagerly in float32 (bf16 on a CPU
without bf16 matrix units is slower, not faster). Early stopping on the validation log loss with
`patience` epochs, the learning rate halved after each epoch without improvement, keeping the
best epoch's weights.
"""

from __future__ import annotations

import io
import json
import math
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mlcore.engine.metrics import classification_metrics

__all__ = [
    "ARTIFACT_FORMAT",
    "PropensityConfig",
    "PropensityData",
    "PropensityNet",
    "TrainedPropensity",
    "default_device",
    "load_propensity_data",
    "resolve_device",
    "save_propensity_data",
    "split_indices",
    "train_propensity",
]

ARTIFACT_FORMAT = "mlcore.propensity/1"
# Rows per forward pass when scoring: bounds activation memory (1M x 256 floats = 1 GB) on any device.
PREDICT_CHUNK = 1 << 20


@dataclass
class PropensityData:
    """n rows of training data: numeric features, channel and creative indices, 0/1 outcome."""

    X: np.ndarray  # (n, d) float32, raw or scaled: the model standardises internally
    channel: np.ndarray  # (n,) int64 in 0..n_channels-1
    creative: np.ndarray  # (n,) int64 in 0..n_creatives-1
    y: np.ndarray  # (n,) float32 0/1
    feature_names: list[str] = field(default_factory=list)
    # Synthetic data only: the true P(goal) each row was drawn with (None for real data).
    true_p: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.X = np.ascontiguousarray(self.X, dtype=np.float32)
        if self.X.ndim != 2:
            raise ValueError(f"X must be 2-D (rows, features), got shape {self.X.shape}")
        self.channel = np.ascontiguousarray(self.channel, dtype=np.int64).reshape(-1)
        self.creative = np.ascontiguousarray(self.creative, dtype=np.int64).reshape(-1)
        self.y = np.ascontiguousarray(self.y, dtype=np.float32).reshape(-1)
        n = self.X.shape[0]
        for name in ("channel", "creative", "y"):
            if getattr(self, name).shape[0] != n:
                raise ValueError(f"{name} has {getattr(self, name).shape[0]} rows but X has {n}")
        if not self.feature_names:
            self.feature_names = [f"x{i}" for i in range(self.X.shape[1])]
        if len(self.feature_names) != self.X.shape[1]:
            raise ValueError(f"{len(self.feature_names)} feature names for {self.X.shape[1]} feature columns")
        if not np.isfinite(self.X).all():
            bad = np.argwhere(~np.isfinite(self.X))[0]
            raise ValueError(f"X row {bad[0]} feature {self.feature_names[bad[1]]!r} is not a finite number")
        bad_y = np.flatnonzero((self.y != 0) & (self.y != 1))
        if bad_y.size:
            raise ValueError(f"y row {bad_y[0]} is {self.y[bad_y[0]]}, expected 0 or 1")

    def __len__(self) -> int:
        return self.X.shape[0]

    def check_indices(self, n_channels: int, n_creatives: int) -> None:
        for name, values, size in (("channel", self.channel, n_channels), ("creative", self.creative, n_creatives)):
            bad = np.flatnonzero((values < 0) | (values >= size))
            if bad.size:
                raise ValueError(f"{name} row {bad[0]} is {values[bad[0]]}, outside 0..{size - 1}")

    def subset(self, idx: np.ndarray) -> PropensityData:
        return PropensityData(
            self.X[idx],
            self.channel[idx],
            self.creative[idx],
            self.y[idx],
            list(self.feature_names),
            None if self.true_p is None else self.true_p[idx],
        )


def save_propensity_data(data: PropensityData, path: str) -> None:
    """The feature file the CLI reads: npz with X, channel, creative, y, feature_names."""
    np.savez(
        path,
        X=data.X,
        channel=data.channel,
        creative=data.creative,
        y=data.y,
        feature_names=np.array(data.feature_names, dtype=str),
    )


def load_propensity_data(path: str) -> PropensityData:
    with np.load(path, allow_pickle=False) as npz:
        missing = {"X", "channel", "creative", "y"} - set(npz.files)
        if missing:
            raise ValueError(f"{path} lacks {', '.join(sorted(missing))}")
        names = [str(s) for s in npz["feature_names"]] if "feature_names" in npz.files else []
        return PropensityData(npz["X"], npz["channel"], npz["creative"], npz["y"], names)


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_device(device: str | None) -> str:
    """None or "auto" -> default_device(); "cuda" where there is none is an error, not a silent CPU run."""
    if device in (None, "auto"):
        return default_device()
    if device not in ("cuda", "cpu") and not str(device).startswith("cuda:"):
        raise ValueError(f"device must be auto, cuda or cpu, got {device!r}")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device cuda asked for, but torch sees no CUDA GPU")
    return str(device)


def split_indices(n: int, valid_fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic random train/valid split of range(n): (train, valid), each sorted."""
    if not 0.0 < valid_fraction < 1.0:
        raise ValueError(f"valid_fraction must be between 0 and 1, got {valid_fraction}")
    if n < 2:
        raise ValueError(f"need at least 2 rows to split, got {n}")
    n_valid = min(max(round(n * valid_fraction), 1), n - 1)
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_valid:]), np.sort(perm[:n_valid])


@dataclass
class PropensityConfig:
    hidden: tuple[int, ...] = (256, 128)
    embed_dim: int = 8
    lr: float = 3e-3
    batch_size: int = 65536  # the most rows per step; see train_propensity for small splits
    max_epochs: int = 50
    patience: int = 3
    weight_decay: float = 1e-5
    seed: int = 0
    amp: bool = True  # bf16 autocast, on cuda only
    # torch.compile the model (cuda only). Off by default: it costs tens of seconds of compile time
    # for a model this small, where the loop is bound by kernel launches rather than arithmetic.
    compile: bool = False
    min_delta: float = 1e-5  # a validation log loss lower by less than this is not an improvement
    # Learning rate multiplied by this after each epoch without improvement (1.0: constant): the
    # large-batch steps that get close fast then settle instead of bouncing around the optimum.
    lr_decay: float = 0.5
    # Stop after this many training steps in an epoch (None: the whole epoch). For throughput
    # measurements on a slow device only; a real training run leaves it None.
    max_steps_per_epoch: int | None = None
    # Channel/creative vocabularies up to this size are embedded by a one-hot matrix product
    # instead of a lookup (same numbers): the lookup's backward on CUDA sorts the batch's indices
    # and waits for the host every step, which capped training at a third of the one-hot speed.
    # 0: always the lookup.
    one_hot_max: int = 256
    # Capture the training step in a CUDA graph on cuda (ignored on cpu, with compile, or when
    # the training split is smaller than one batch).
    cuda_graph: bool = True

    def __post_init__(self) -> None:
        self.hidden = tuple(int(h) for h in self.hidden)
        if any(h < 1 for h in self.hidden) or self.embed_dim < 1:
            raise ValueError("hidden sizes and embed_dim must be positive")
        if self.batch_size < 1 or self.max_epochs < 1 or self.patience < 1:
            raise ValueError("batch_size, max_epochs and patience must be at least 1")
        if not 0.0 < self.lr_decay <= 1.0:
            raise ValueError(f"lr_decay must be in (0, 1], got {self.lr_decay}")


class PropensityNet(nn.Module):
    """Standardise -> [features, channel embedding, creative embedding] -> MLP -> logit."""

    def __init__(
        self,
        n_features: int,
        n_channels: int,
        n_creatives: int,
        hidden: Sequence[int],
        embed_dim: int,
        one_hot_max: int = 256,
    ):
        super().__init__()
        self.one_hot_max = one_hot_max
        self.register_buffer("mean", torch.zeros(n_features))
        self.register_buffer("scale", torch.ones(n_features))
        self.channel_embedding = nn.Embedding(n_channels, embed_dim)
        self.creative_embedding = nn.Embedding(n_creatives, embed_dim)
        layers: list[nn.Module] = []
        width = n_features + 2 * embed_dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)

    def forward(self, X: torch.Tensor, channel: torch.Tensor, creative: torch.Tensor) -> torch.Tensor:
        z = (X - self.mean) / self.scale
        h = torch.cat(
            [z, self._embed(self.channel_embedding, channel), self._embed(self.creative_embedding, creative)], 1
        )
        return self.mlp(h).squeeze(-1)

    def _embed(self, table: nn.Embedding, index: torch.Tensor) -> torch.Tensor:
        if table.num_embeddings <= self.one_hot_max:
            return F.one_hot(index, table.num_embeddings).to(table.weight.dtype) @ table.weight
        return table(index)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _fit_scaler(X: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std of X[idx] in float64, chunked so a 20M-row set needs no float64 copy."""
    total = torch.zeros(X.shape[1], dtype=torch.float64, device=X.device)
    for start in range(0, idx.numel(), PREDICT_CHUNK):
        total += X[idx[start : start + PREDICT_CHUNK]].double().sum(0)
    mean = total / idx.numel()
    sq = torch.zeros_like(total)
    for start in range(0, idx.numel(), PREDICT_CHUNK):
        sq += ((X[idx[start : start + PREDICT_CHUNK]].double() - mean) ** 2).sum(0)
    std = (sq / idx.numel()).sqrt()
    # A constant column carries no signal; scale 1 keeps it at 0 instead of dividing by zero.
    std = torch.where(std > 1e-12, std, torch.ones_like(std))
    return mean.float(), std.float()


def _auc_torch(y: torch.Tensor, p: torch.Tensor) -> float | None:
    """Rank-statistic AUC with ties as half, on the device (the per-epoch curve; final metrics use numpy)."""
    n_pos = int(y.sum().item())
    n_neg = y.numel() - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    sorted_p, order = torch.sort(p)
    _, inverse, counts = torch.unique_consecutive(sorted_p, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).double()
    mean_rank = ends - (counts.double() - 1) / 2  # mean of the 1-based ranks ends-count+1 .. ends
    rank_sum = (mean_rank[inverse] * y[order].double()).sum().item()
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


@torch.no_grad()
def _logits(model: nn.Module, X: torch.Tensor, channel: torch.Tensor, creative: torch.Tensor) -> torch.Tensor:
    """float32 logits in chunks (no autocast: bf16 logits would tie many scores and blur the AUC)."""
    out = torch.empty(X.shape[0], dtype=torch.float32, device=X.device)
    for start in range(0, X.shape[0], PREDICT_CHUNK):
        end = start + PREDICT_CHUNK
        out[start:end] = model(X[start:end], channel[start:end], creative[start:end]).float()
    return out


class TrainedPropensity:
    """A trained model with its validation metrics and per-epoch curve; scores raw features."""

    def __init__(
        self,
        model: PropensityNet,
        config: PropensityConfig,
        feature_names: list[str],
        n_channels: int,
        n_creatives: int,
        metrics: dict | None = None,
        curve: list[dict] | None = None,
    ):
        self.model = model.eval()
        self.config = config
        self.feature_names = list(feature_names)
        self.n_features = len(feature_names)
        self.n_channels = n_channels
        self.n_creatives = n_creatives
        self.metrics = metrics or {}
        self.curve = curve or []

    @property
    def device(self) -> str:
        return str(next(self.model.parameters()).device)

    def predict(
        self, X: np.ndarray, channel: np.ndarray, creative: np.ndarray, device: str | None = None
    ) -> np.ndarray:
        """P(goal) for each row, float64 (n,). `device` None: wherever the model is."""
        data = PropensityData(X, channel, creative, np.zeros(len(X), dtype=np.float32), self.feature_names)
        data.check_indices(self.n_channels, self.n_creatives)
        target = resolve_device(device) if device is not None else self.device
        model = self.model if target == self.device else self.model.to(target)
        self.model = model
        with torch.no_grad():
            logits = _logits(
                model,
                torch.from_numpy(data.X).to(target),
                torch.from_numpy(data.channel).to(target),
                torch.from_numpy(data.creative).to(target),
            )
        return torch.sigmoid(logits).double().cpu().numpy()

    def to_bytes(self) -> bytes:
        """Self-contained artifact: config, sizes, feature names, scaler and weights (in the
        state dict), metrics and curve. Loadable with torch.load(weights_only=True)."""
        payload = {
            "format": ARTIFACT_FORMAT,
            "config": asdict(self.config),
            "feature_names": self.feature_names,
            "n_channels": self.n_channels,
            "n_creatives": self.n_creatives,
            "state_dict": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            # Through JSON: plain floats, ints, strings, lists and dicts only, which the
            # weights_only unpickler accepts (a numpy scalar in the metrics would not load).
            "metrics": json.loads(json.dumps(self.metrics)),
            "curve": json.loads(json.dumps(self.curve)),
        }
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, blob: bytes, device: str | None = None) -> TrainedPropensity:
        # weights_only: an artifact from a shared store cannot run code when loaded.
        payload = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
        if payload.get("format") != ARTIFACT_FORMAT:
            raise ValueError(f"not a propensity artifact (format {payload.get('format')!r})")
        config = PropensityConfig(**payload["config"])
        names = list(payload["feature_names"])
        model = PropensityNet(
            len(names),
            payload["n_channels"],
            payload["n_creatives"],
            config.hidden,
            config.embed_dim,
            config.one_hot_max,
        )
        model.load_state_dict(payload["state_dict"])
        model.to(resolve_device(device))
        return cls(
            model, config, names, payload["n_channels"], payload["n_creatives"], payload["metrics"], payload["curve"]
        )


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"{platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def train_propensity(
    data: PropensityData,
    n_channels: int,
    n_creatives: int,
    config: PropensityConfig | None = None,
    device: str | None = None,
    train_idx: np.ndarray | None = None,
    valid_idx: np.ndarray | None = None,
) -> TrainedPropensity:
    """Train on train_idx, early-stop on valid_idx (default: split_indices(n, 0.2, config.seed)).

    metrics: the validation metrics of the best epoch (auc, log_loss, brier, calibration, ece) plus
    samples_per_s (training rows processed per second of time spent in training steps, validation
    passes excluded), epochs (run), best_epoch, device, device_name, n_train, n_valid,
    train_seconds, wall_seconds, batch_size (the one used), amp, compiled, cuda_graph, cuda_graph_error.
    curve: per epoch, epoch, train_loss, valid_loss, valid_auc, samples, train_seconds, lr.
    """
    wall_start = time.perf_counter()
    config = config or PropensityConfig()
    device = resolve_device(device)
    data.check_indices(n_channels, n_creatives)
    if train_idx is None or valid_idx is None:
        train_idx, valid_idx = split_indices(len(data), 0.2, config.seed)
    train_idx = np.asarray(train_idx, dtype=np.int64)
    valid_idx = np.asarray(valid_idx, dtype=np.int64)
    if train_idx.size == 0 or valid_idx.size == 0:
        raise ValueError("train and validation splits must both have rows")

    torch.manual_seed(config.seed)
    on_cuda = device.startswith("cuda")
    amp = bool(config.amp and on_cuda)

    # The whole data set goes to the device once; every batch is an index gather from it.
    X = torch.from_numpy(data.X).to(device)
    channel = torch.from_numpy(data.channel).to(device)
    creative = torch.from_numpy(data.creative).to(device)
    y = torch.from_numpy(data.y).to(device)
    train_t = torch.from_numpy(train_idx).to(device)
    valid_t = torch.from_numpy(valid_idx).to(device)
    Xv, cv, kv, yv = X[valid_t], channel[valid_t], creative[valid_t], y[valid_t]

    model = PropensityNet(
        data.X.shape[1], n_channels, n_creatives, config.hidden, config.embed_dim, config.one_hot_max
    ).to(device)
    mean, scale = _fit_scaler(X, train_t)
    model.mean.copy_(mean)
    model.scale.copy_(scale)
    n_train = train_idx.size
    # batch_size is a ceiling: a split smaller than 8 batches gets batches of n_train // 8 (at
    # least 256), or a few thousand rows with the 65,536 default would train one step an epoch.
    batch = min(config.batch_size, max(256, n_train // 8))
    # One training step is ~100 small kernels; on cuda their launches, not the arithmetic, bound
    # the speed (each costs microseconds, more inside a VM). A CUDA graph replays a captured
    # step with one launch. Every batch is then full-size (the last one of an epoch overlaps
    # the one before it), since a graph has fixed shapes.
    use_graph = on_cuda and config.cuda_graph and not config.compile and n_train >= batch
    # A tensor learning rate lives on the device, so the captured optimizer step reads its
    # current value and the plateau decay below reaches the graph.
    lr: float | torch.Tensor = torch.tensor(config.lr, device=device) if use_graph else config.lr
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=lr, weight_decay=config.weight_decay, fused=True, capturable=use_graph
    )
    step_model: nn.Module = torch.compile(model) if (config.compile and on_cuda) else model
    generator = torch.Generator(device=device)
    generator.manual_seed(config.seed)
    loss_acc = torch.zeros((), dtype=torch.float32, device=device)  # sum of loss x rows this epoch

    def train_step(idx: torch.Tensor, zero_grad: bool = True) -> None:
        # cache_enabled=False: autocast's weight-cast cache must be off for graph capture.
        with torch.autocast(
            device_type="cuda" if on_cuda else "cpu", dtype=torch.bfloat16, enabled=amp, cache_enabled=False
        ):
            logits = step_model(X[idx], channel[idx], creative[idx])
        loss = F.binary_cross_entropy_with_logits(logits.float(), y[idx])
        if zero_grad:
            optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_acc.add_(loss.detach() * idx.numel())

    static_idx = torch.zeros(batch, dtype=torch.int64, device=device) if use_graph else None
    graph: torch.cuda.CUDAGraph | None = None
    warm_steps = 0
    graph_error: str | None = None

    curve: list[dict] = []
    best_loss = math.inf
    best_state: dict[str, torch.Tensor] | None = None
    best_epoch = 0
    bad_epochs = 0
    train_seconds = 0.0
    samples = 0
    for epoch in range(1, config.max_epochs + 1):
        model.train()
        _sync(device)
        started = time.perf_counter()
        order = train_t[torch.randperm(n_train, device=device, generator=generator)]
        loss_acc.zero_()
        seen = 0
        for step, start in enumerate(range(0, n_train, batch)):
            if config.max_steps_per_epoch is not None and step >= config.max_steps_per_epoch:
                break
            if use_graph:
                start = min(start, n_train - batch)
            idx = order[start : start + batch]
            if graph is not None:
                static_idx.copy_(idx)
                graph.replay()
            elif use_graph:
                # Warm-up steps on a side stream before capture, as CUDA graph capture requires.
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    static_idx.copy_(idx)
                    train_step(static_idx)
                torch.cuda.current_stream().wait_stream(side)
                warm_steps += 1
                if warm_steps == 3:
                    try:
                        optimizer.zero_grad(set_to_none=True)
                        captured = torch.cuda.CUDAGraph()
                        with torch.cuda.graph(captured):
                            train_step(static_idx, zero_grad=False)
                        graph = captured
                    except RuntimeError as error:  # an unsupported op: train on, eagerly
                        graph_error, use_graph = str(error).splitlines()[0], False
            else:
                train_step(idx)
            seen += idx.numel()
        _sync(device)
        time_in_epoch = time.perf_counter() - started
        train_seconds += time_in_epoch
        samples += seen

        model.eval()
        valid_logits = _logits(model, Xv, cv, kv)
        valid_loss = F.binary_cross_entropy_with_logits(valid_logits, yv).item()
        valid_auc = _auc_torch(yv, valid_logits)
        curve.append(
            {
                "epoch": epoch,
                "train_loss": loss_acc.item() / max(seen, 1),
                "valid_loss": valid_loss,
                "valid_auc": valid_auc,
                "samples": seen,
                "train_seconds": time_in_epoch,
                "lr": float(optimizer.param_groups[0]["lr"]),
            }
        )
        if valid_loss < best_loss - config.min_delta:
            best_loss, best_epoch, bad_epochs = valid_loss, epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            bad_epochs += 1
            if bad_epochs >= config.patience:
                break
            for group in optimizer.param_groups:
                if isinstance(group["lr"], torch.Tensor):
                    group["lr"].mul_(config.lr_decay)  # in place: the graph reads this memory
                else:
                    group["lr"] *= config.lr_decay

    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    p_valid = torch.sigmoid(_logits(model, Xv, cv, kv)).double().cpu().numpy()
    metrics = classification_metrics(data.y[valid_idx], p_valid)
    metrics.update(
        {
            "samples_per_s": samples / train_seconds if train_seconds > 0 else None,
            "epochs": len(curve),
            "best_epoch": best_epoch,
            "device": "cuda" if on_cuda else "cpu",
            "device_name": device_name(device),
            "n_train": int(n_train),
            "n_valid": int(valid_idx.size),
            "train_seconds": train_seconds,
            "wall_seconds": time.perf_counter() - wall_start,
            "batch_size": batch,
            "amp": amp,
            "compiled": bool(config.compile and on_cuda),
            "cuda_graph": graph is not None,
            "cuda_graph_error": graph_error,
        }
    )
    return TrainedPropensity(model, config, data.feature_names, n_channels, n_creatives, metrics, curve)

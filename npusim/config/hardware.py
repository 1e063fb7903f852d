"""Hardware profile: chip, node, cluster, and efficiency models kept apart from datasheet peaks.

Units are in the field names: TFLOPS = 1e12 FLOP/s, GB = 1e9 bytes, GBps = 1e9 bytes/s per
direction, us = microseconds. Every section carries a ``source`` string citing where its numbers
come from; derating factors live in ``efficiency`` (physically motivated defaults) or in
``calibration`` (fitted by ``npusim calibrate`` from kernel measurements), never in the datasheet
sections.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional

from pydantic import ConfigDict, Field, PositiveFloat, model_validator

from npusim.config.policy import MAX_DEVICES, StrictModel

Dtype = Literal["fp32", "tf32", "bf16", "fp16", "fp8", "int8", "int4"]
DTYPES: tuple[str, ...] = ("fp32", "tf32", "bf16", "fp16", "fp8", "int8", "int4")


Count = Annotated[int, Field(gt=0, le=MAX_DEVICES)]
"""A positive device or server count (at most MAX_DEVICES)."""


class _Strict(StrictModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


class ChipSpec(_Strict):
    """One accelerator (one addressable device: a GPU, a 910B, a 310P chip or a 910C package)."""

    name: str
    """Marketing name and SKU, e.g. 'Ascend 910B (376T SKU)'."""
    matrix_tflops: dict[Dtype, PositiveFloat]
    """Dense peak of the matrix unit (tensor core / cube) per dtype, TFLOP/s. Missing dtype = unsupported."""
    vector_tflops: dict[Dtype, PositiveFloat]
    """Peak of the vector unit (CUDA cores / AIV) per dtype, TFLOP/s."""
    hbm_capacity_GB: PositiveFloat
    """Device memory capacity in GB (1e9 bytes)."""
    hbm_bandwidth_GBps: PositiveFloat
    """Datasheet device-memory bandwidth, GB/s."""
    separate_vector_unit: bool = False
    """True when vector kernels run on their own cores beside the matrix unit (Ascend A2/A3: AIV next
    to AIC), so the event engine gives them a stream of their own; False when both share one pool
    (GPU SMs; Ascend 310P)."""
    source: str
    """Citation for every number in this section."""


class Protocol(_Strict):
    """A low-latency transfer protocol a collective library can use instead of its bulk one on a
    tier (NCCL's LL and LL128 beside Simple): fewer microseconds per step, part of the link's
    bandwidth carrying flags instead of data. The tier's own ``latency_us`` and full bandwidth are
    the bulk protocol; the fastest protocol alone is used for each collective."""

    name: str
    step_latency_us: PositiveFloat
    """Latency of one algorithm step under this protocol, microseconds (replaces the tier's latency_us)."""
    payload_fraction: float = Field(gt=0, le=1)
    """Fraction of the bytes on the wire that are data (LL: 4 of 8 bytes; LL128: 120 of 128)."""
    max_message_bytes: Optional[PositiveFloat] = None
    """Largest collective buffer the library runs with this protocol (blank: any size; the
    library's cost model decides, as NCCL's tuner does)."""


class ScaleUpLevel(_Strict):
    """The second level of a two-level switched scale-up domain (CloudMatrix384's UB: first-level
    switches inside each server, second-level switches joining the servers of the SuperPoD)."""

    first_level_devices: Count
    """Devices under one first-level switch group (one server on CloudMatrix384)."""
    bandwidth_GBps: PositiveFloat
    """Per-device bandwidth per direction to devices under other first-level groups, GB/s."""
    latency_us: PositiveFloat
    """One-way latency between devices under different first-level groups, microseconds."""
    source: str


class ScaleUpSpec(_Strict):
    """Links inside the scale-up domain (NVLink/NVSwitch, HCCS full mesh, UB, PCIe)."""

    type: Literal["nvlink", "hccs", "ub", "pcie"]
    topology: Literal["switch", "full_mesh"]
    """'switch': every device reaches every other at full bandwidth; 'full_mesh': one point-to-point
    link per peer, so a group of g devices can use only g-1 links of each device."""
    bandwidth_GBps: PositiveFloat
    """Aggregate per-device bandwidth per direction (all links together), GB/s."""
    latency_us: PositiveFloat
    """One-hop latency, microseconds."""
    domain_devices: Optional[Count] = None
    """Devices in one scale-up domain when it is larger than a server (CloudMatrix384: 384)."""
    second_level: Optional[ScaleUpLevel] = None
    """Second switch level of a two-level scale-up domain (blank: one level, every pair of
    devices one switch apart)."""
    in_switch_reduction_latency_us: Optional[PositiveFloat] = None
    """The switches reduce in the network (NVLink SHARP, NCCL's NVLS algorithm on NVSwitch 3): an
    all-reduce inside one domain sends each rank's buffer up once and receives the reduced result
    once, after this fixed latency in microseconds. Blank: the switches do not reduce."""
    protocols: tuple[Protocol, ...] = ()
    """Low-latency protocols beside the bulk one on this tier (empty: the bulk protocol only)."""
    source: str


class HostSpec(_Strict):
    """The server's host side as seen by one device: its link to host memory and the CPUs that step
    an offloaded optimizer (activation swapping, ``offload_optimizer``; docs/memory.md)."""

    link_GBps: PositiveFloat
    """Device-to-host bandwidth per device, per direction (PCIe x16 or host HCCS)."""
    memory_bandwidth_GBps: PositiveFloat
    """Host DRAM bandwidth of the whole server (all CPU sockets)."""
    cpu_tflops: PositiveFloat
    """FP32 vector peak of the server's CPUs (all sockets)."""
    memory_GB: PositiveFloat
    """Host DRAM capacity of the server."""
    source: str


class NodeSpec(_Strict):
    """One server."""

    devices_per_node: Count
    """Devices (chips) per server."""
    chips_per_card: Count = 1
    """Devices (chips) on one card or module: 2 on an Atlas 300I Duo (two 310P), 1 for a 910B module
    or a GPU. Run records and ``--cards`` count cards; parallel sizes and ``--devices`` count chips."""
    devices_per_cpu: Optional[Count] = None
    """Devices whose PCIe root complex is one host CPU (None: all devices of the server, or a fabric
    that does not go through the CPU). Traffic between devices of different CPUs crosses the
    inter-socket path at ``cross_cpu_GBps``."""
    cross_cpu_GBps: Optional[PositiveFloat] = None
    """Per-device rate, per direction, of device traffic between CPUs of one server (needed with
    ``devices_per_cpu``)."""
    cross_cpu_latency_us: Optional[PositiveFloat] = None
    """Latency of one step of device traffic between CPUs (needed with ``devices_per_cpu``)."""
    scale_up: ScaleUpSpec
    host: Optional[HostSpec] = None
    """Host link and CPUs (None: offload unavailable on this profile)."""
    source: str

    @model_validator(mode="after")
    def _check_node(self) -> "NodeSpec":
        if self.devices_per_node % self.chips_per_card:
            raise ValueError(f"devices_per_node ({self.devices_per_node}) must be a multiple of chips_per_card "
                             f"({self.chips_per_card})")
        if self.devices_per_cpu is not None:
            if self.devices_per_node % self.devices_per_cpu or self.devices_per_cpu % self.chips_per_card:
                raise ValueError("devices_per_cpu must divide devices_per_node and be a multiple of chips_per_card")
            if self.cross_cpu_GBps is None or self.cross_cpu_latency_us is None:
                raise ValueError("devices_per_cpu needs cross_cpu_GBps and cross_cpu_latency_us")
        return self


class ScaleOutSpec(_Strict):
    """The network between scale-up domains (InfiniBand, RoCE, UB): its capacity, latency and
    shape. (The former ``type`` field is gone: no result depended on it; name the network in a
    comment.)"""

    nics_per_device: PositiveFloat
    """NIC ports per device (0.5 = two devices share one port)."""
    nic_bandwidth_GBps: PositiveFloat
    """Per-port bandwidth per direction, GB/s (200 Gb/s = 25 GB/s)."""
    latency_us: PositiveFloat
    topology: Literal["clos", "fat_tree", "rail_optimized"]
    oversubscription: float = Field(1.0, ge=1.0)
    """Leaf-to-spine oversubscription (1 = non-blocking)."""
    nodes_per_leaf: Count = 16
    """Servers under one leaf switch; traffic beyond them crosses the spine."""
    planes: Count = 1
    """Independent network planes (a multi-plane fat tree, as DeepSeek-V3's: NIC i of every server
    on plane i mod planes, the planes not connected to each other). Traffic between devices on
    different planes is first forwarded over the scale-up fabric to a peer on the right plane."""
    protocols: tuple[Protocol, ...] = ()
    """Low-latency protocols beside the bulk one on this tier (empty: the bulk protocol only)."""
    source: str


class GemmEfficiency(_Strict):
    """Fraction of matrix peak a GEMM reaches: ``max_fraction * prod(d / (d + d_half))`` over M, N, K."""

    max_fraction: float = Field(gt=0, le=1)
    m_half: float = Field(ge=0)
    n_half: float = Field(ge=0)
    k_half: float = Field(ge=0)


class MemoryEfficiency(_Strict):
    """Achieved fraction of HBM bandwidth: ``max_fraction * bytes / (bytes + half_bytes)``."""

    max_fraction: float = Field(gt=0, le=1)
    half_bytes: float = Field(ge=0)


class AttentionEfficiency(_Strict):
    """Fraction of matrix peak reached by fused (flash) attention, saturating in sequence length."""

    max_fraction: float = Field(gt=0, le=1)
    seq_half: float = Field(ge=0)
    backward_factor: float = Field(2.5, gt=0)
    """Backward time / forward time at equal efficiency (FLOP ratio 2.5 for flash attention)."""


class EfficiencyModel(_Strict):
    """Derating models: how much of the datasheet a real kernel or collective reaches."""

    gemm: GemmEfficiency
    grouped_gemm_tokens_half: float = Field(0.0, ge=0)
    """Grouped-GEMM penalty: extra M-saturation from tokens per expert (0 = same as dense GEMM)."""
    attention: AttentionEfficiency
    memory: MemoryEfficiency
    vector_fraction: float = Field(gt=0, le=1)
    """Achieved fraction of vector peak for compute-bound elementwise work."""
    launch_overhead_us: float = Field(ge=0)
    """Fixed cost added to every kernel (matrix kernels and fused attention always; vector and
    memory-bound kernels too unless ``vector_launch_us`` is set)."""
    vector_launch_us: Optional[float] = Field(None, ge=0)
    """Fixed cost of a vector / memory-bound kernel where it differs from a matrix kernel's
    (msModeling's Ascend static costs: 5 us per cube op, 2 us per vector op); blank = launch_overhead_us."""
    scale_up_fraction: float = Field(gt=0, le=1)
    """Achieved fraction of scale-up link bandwidth by collectives (bus bandwidth / link)."""
    scale_out_fraction: float = Field(gt=0, le=1)
    """Achieved fraction of scale-out NIC bandwidth by collectives."""
    collective_launch_us: float = Field(0.0, ge=0)
    """Fixed cost of one collective call (launch, synchronisation), on top of link latency."""
    overlap_compute_slowdown: float = Field(0.0, ge=0, lt=1)
    """Fraction by which compute (matrix-unit work) slows while a collective runs concurrently on
    the same device."""
    overlap_vector_slowdown: float = Field(0.0, ge=0, lt=1)
    """Fraction by which vector- and memory-bound kernels slow while a collective runs concurrently
    (collectives that run on vector cores or SMs and use HBM bandwidth hit these hardest)."""
    overlap_comm_slowdown: float = Field(0.0, ge=0, lt=1)
    """Fraction by which a collective slows while compute runs concurrently on the same device."""
    host_link_fraction: float = Field(0.8, gt=0, le=1)
    """Achieved fraction of ``node.host.link_GBps`` by swaps (DMA copies of large pinned buffers)."""
    host_memory_fraction: float = Field(0.6, gt=0, le=1)
    """Achieved fraction of host DRAM bandwidth and CPU peak by the host optimizer step."""
    source: str
    """How these numbers were obtained: measurement, fit (with command), or physical argument."""


class Calibration(EfficiencyModel):
    """An efficiency model fitted from kernel measurements (overrides ``efficiency`` when present)."""

    fitted_from: str
    """The data set the fit used (path and provenance)."""
    command: str
    """The command that reproduces the fit."""
    residuals: dict[str, float] = Field(default_factory=dict)
    """Fit quality per kernel class, e.g. {'gemm_mape_pct': 6.1}."""


class HardwareProfile(_Strict):
    """A complete hardware profile: datasheet sections plus derating models."""

    name: str
    description: str
    chip: ChipSpec
    node: NodeSpec
    cluster: ScaleOutSpec
    efficiency: EfficiencyModel
    calibration: Optional[Calibration] = None
    max_devices: Count = 1_000_000
    """Largest cluster this system can be built to (collective domain limit)."""
    notes: str = ""

    @model_validator(mode="after")
    def _check(self) -> "HardwareProfile":
        if not self.chip.matrix_tflops:
            raise ValueError("chip.matrix_tflops must name at least one dtype")
        dom = self.node.scale_up.domain_devices
        if dom is not None and dom % self.node.devices_per_node:
            raise ValueError("node.scale_up.domain_devices must be a multiple of devices_per_node")
        lvl = self.node.scale_up.second_level
        if lvl is not None:
            if self.node.scale_up.topology != "switch":
                raise ValueError("node.scale_up.second_level needs topology: switch")
            if self.scale_up_devices % lvl.first_level_devices or lvl.first_level_devices >= self.scale_up_devices:
                raise ValueError(f"node.scale_up.second_level.first_level_devices ({lvl.first_level_devices}) "
                                 f"must divide the scale-up domain ({self.scale_up_devices} devices) and be smaller")
        if self.node.scale_up.in_switch_reduction_latency_us is not None and self.node.scale_up.topology != "switch":
            raise ValueError("node.scale_up.in_switch_reduction_latency_us needs topology: switch")
        if self.node.devices_per_node % self.cluster.planes:
            raise ValueError(f"cluster.planes ({self.cluster.planes}) must divide node.devices_per_node "
                             f"({self.node.devices_per_node})")
        return self

    @property
    def derating(self) -> EfficiencyModel:
        """The efficiency model in force: the calibration when present, else the defaults."""
        return self.calibration if self.calibration is not None else self.efficiency

    @property
    def scale_up_devices(self) -> int:
        """Devices that share the scale-up fabric (a server, or a SuperPoD for UB systems)."""
        return self.node.scale_up.domain_devices or self.node.devices_per_node

    def matrix_peak_flops(self, dtype: str) -> float:
        """Matrix-unit peak in FLOP/s for ``dtype`` (plan independent)."""
        return self.chip.matrix_tflops[dtype] * 1e12  # type: ignore[index]

    def with_changes(self, **scales: float) -> "HardwareProfile":
        """Return a copy with datasheet numbers scaled: flops, hbm_bw, scale_up_bw, scale_out_bw."""
        chip, node, cluster = self.chip, self.node, self.cluster
        if "flops" in scales:
            f = scales["flops"]
            chip = chip.model_copy(update={
                "matrix_tflops": {k: v * f for k, v in chip.matrix_tflops.items()},
                "vector_tflops": {k: v * f for k, v in chip.vector_tflops.items()}})
        if "hbm_bw" in scales:
            chip = chip.model_copy(update={"hbm_bandwidth_GBps": chip.hbm_bandwidth_GBps * scales["hbm_bw"]})
        if "scale_up_bw" in scales:
            su = node.scale_up.model_copy(update={"bandwidth_GBps": node.scale_up.bandwidth_GBps * scales["scale_up_bw"]})
            node = node.model_copy(update={"scale_up": su})
        if "scale_out_bw" in scales:
            cluster = cluster.model_copy(update={"nic_bandwidth_GBps": cluster.nic_bandwidth_GBps * scales["scale_out_bw"]})
        return self.model_copy(update={"chip": chip, "node": node, "cluster": cluster})


PROFILE_DIR_ENV = "NPUSIM_PROFILE_PATH"


def profile_dirs() -> list[Path]:
    """Directories searched for ``NAME.yaml``: $NPUSIM_PROFILE_PATH, the repo's hw_profiles/, the wheel's copy."""
    import os

    dirs = [Path(p) for p in os.environ.get(PROFILE_DIR_ENV, "").split(os.pathsep) if p]
    pkg = Path(__file__).resolve().parent.parent
    dirs += [pkg.parent / "hw_profiles", pkg / "hw_profiles"]
    return [d for d in dirs if d.is_dir()]


def list_profiles() -> list[str]:
    """Names of every preset profile found."""
    names: set[str] = set()
    for d in profile_dirs():
        names.update(p.stem for p in d.glob("*.yaml"))
    return sorted(names)


def profile_path(name_or_path: str) -> Path:
    """The YAML file of a preset name or path; raise ConfigError for an unknown name."""
    from npusim.config.loader import find_preset

    return find_preset(name_or_path, profile_dirs(), "hardware")


def load_profile(name_or_path: str) -> HardwareProfile:
    """Load a preset by name or a profile YAML by path; raise ConfigError with one line on any defect."""
    from npusim.config.loader import read_mapping, validate

    path = profile_path(name_or_path)
    return validate(HardwareProfile, read_mapping(path), str(path))

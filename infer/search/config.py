"""The search's config (:class:`SearchConfig`, ``g2net-search`` key=value overrides), its
files and constants, and false-alarm-rate units."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from data.config import ConfigError
from data.layout import DETECTORS
from infer.config import InferError

# Bumped when a change here changes a window's score for the same inputs and settings, so that
# windows.npz files written before are not reused.
SEARCH_VERSION = 2  # 2: logits, not probabilities
WINDOWS_FILE = "windows.npz"
SUMMARY_FILE = "summary.json"
CONFIG_FILE = "search.yaml"
HARD_NEGATIVES_FILE = "hard_negatives.csv"
# Settings that do not change a window's score: a cached windows.npz is reused across them.
POST_KEYS = ("integrate", "trigger_time", "trigger_offset", "cluster", "match_window",
             "injection_veto", "far_thresholds", "snr_bins", "threads", "transform_thread",
             "matched_filter", "background", "save_windows", "hard_negatives")
# Of POST_KEYS, those the ranking statistic depends on: two searches' triggers compare (one's
# background gives the other's FARs) only where these are the same.
RANKING_POST_KEYS = ("integrate",)
# Settings a window's score does not depend on beyond POST_KEYS: the slides, what is read and
# how (a background from another stretch needs the same ranking, not the same slides).
SLIDE_KEYS = ("slides", "slide_step", "slide_detectors", "ring", "channels", "checkpoints",
              "batch_size", "slide_batch_size", "channels_last", "freeze")
LIGHT_TRAVEL = 0.0273  # s: Hanford-Virgo, the longest baseline of the three


class SearchError(InferError):
    """A search the inputs or settings do not allow; the message names the file or key."""


# Seconds in a FAR unit: "1/day" is 365.25 per year.
FAR_UNITS = {"s": 1.0, "minute": 60.0, "hour": 3600.0, "day": 86400.0, "week": 7 * 86400.0,
             "month": 365.25 * 86400.0 / 12, "year": 365.25 * 86400.0}
YEAR = FAR_UNITS["year"]


def far_per_year(spec: str) -> float:
    """``"1/day"`` -> 365.25: a false-alarm rate written N/unit (units: FAR_UNITS), per year."""
    count, sep, unit = str(spec).partition("/")
    try:
        value = float(count)
    except ValueError:
        value = float("nan")
    if not sep or unit not in FAR_UNITS or not value > 0:
        raise ConfigError(f"far_thresholds: {spec!r} is not N/unit with N > 0 and unit one of "
                          f"{', '.join(FAR_UNITS)} (e.g. 1/day)")
    return value * YEAR / FAR_UNITS[unit]


@dataclass
class SearchPSDConfig:
    # "local": the median-Welch PSD of the data around each block of windows (the field's
    # choice for real, drifting noise); "training": the model card's training PSD.
    source: Literal["local", "training"] = "local"
    span: float = 64.0  # s of data around a block whose Welch segments make its PSD
    block: float = 16.0  # s of window starts sharing one PSD (a multiple of the stride)
    hop: float = 1.0  # s between Welch segments of 2 s (1 s: 50 % overlap, scipy's default)
    min_segments: int = 16  # fewer clean segments in a block's span: its windows are skipped


@dataclass
class MatchedFilterSearchConfig:
    """The matched-filter search over long strain (``g2net-search --matched-filter``;
    infer/search/mf.py): the project's template bank (infer.matched_filter) filtered over
    long segments, a network statistic over coincident peaks, the same slides and FARs."""

    min_match: float = 0.9  # bank placement (infer.matched_filter.bank.place_templates)
    spin_max: float = 0.0
    seed: int = 0  # placement's random seed
    # s: the statistic's time resolution; each bin keeps the loudest sample's network SNR^2
    # (a multiple of 1 / 2048 s that divides slide_step).
    bin: float = 1.0 / 64
    segment: float = 32.0  # s per overlap-save FFT block
    template_chunk: int = 16  # templates filtered at once (memory: chunk x segment x 3)
    # A bank.npz of an earlier matched-filter search to use instead of placing one on this
    # strain's PSD: a search whose background comes from another stretch (``background``)
    # must rank with the same templates.
    bank_file: str | None = None


@dataclass
class SearchConfig:
    stride: float = 0.25  # s between 2-s windows (a multiple of 1 / 2048 s, at most 2 s)
    # Windows per transform / model call: on a CPU 32-128 kept the tiny model's activations
    # in cache (256 was 1.4x slower per window).
    batch_size: int = 64
    # Windows per fusion-head call in the slides, for models split at the detectors
    # (g2net_1d_coinc): the head is ~1 % of the model, so large batches amortise the calls.
    slide_batch_size: int = 2048
    # Torch threads per op on a CPU; 0: one less than the cores this process may use (its
    # CPU affinity: a SLURM or taskset CPU set counts, not the machine; half of them with
    # transform_thread), at least 1. Torch's OpenMP workers spin at their barriers: with other
    # busy processes on the cores, 2 threads per op on 2 cores ran the search 3-10x slower
    # than 1 (bench/bench_search.py measures it).
    threads: int = 0
    # The transform in a worker thread beside the models. On the idle 2-core machine the
    # demo's CQT model searched 1.75x faster with it (570 against 326 windows/s); only with
    # other processes busy on the cores was it slower (524 against 624): measure on yours.
    transform_thread: bool = True
    # CQT models read NHWC images: 1.13x faster for the demo's model on a 2-core CPU.
    channels_last: bool = True
    # On a CPU, CQT models are traced and frozen by TorchScript (batch norm folded into the
    # convolutions, ops fused): the demo's model alone ran 1.4x faster than unfrozen (72
    # against 100 ms per 64 windows), its search's model thread 1.1x (the transform thread
    # binds). A model that cannot be traced, or whose frozen outputs differ from its own, runs
    # as it is, with a warning. Both change scores by float32 rounding.
    freeze: bool = True
    psd: SearchPSDConfig = field(default_factory=SearchPSDConfig)
    # s: rank each window on the mean logit of the windows whose starts lie within
    # +-integrate/2 of its own (a centred boxcar, as aframe integrates its network's output
    # over 1 s), before clustering; 0: the window's own logit. A multiple of 2 x stride.
    # Part of the ranking: a background must be integrated alike. Off: on two chains of the
    # search model, 1 s moved the distance at 1/month by -0.006 and +0.000 and loosened the
    # clock (docs/search.md, "The recipe on a new machine, and integrating the logit").
    integrate: float = 0.0
    cluster: float = 2.0  # s: a trigger is the loudest window within +-cluster of itself
    # A trigger's time: "centre": the centre of its peak (the run of windows scoring at least
    # halfway from the surrounding low to the peak, ends interpolated) + trigger_offset;
    # "loudest": the loudest window's start + trigger_offset. A CNN scores a merger about as
    # high anywhere in a window's flat part, so the loudest window is a noisy clock on that
    # plateau and its centre a good one: on injections at SNR >= 15 the centre + 1.1 s erred
    # by 0.026 s (median; 95 %: 0.09 s) for a 1D CNN and 0.026 s for a CQT model, whose
    # plateaus both centre on mergers 1.1 s into the window (docs/search.md, "The clock").
    trigger_time: Literal["centre", "loudest"] = "centre"
    trigger_offset: float = 1.1  # s from a window's start (1.6 suits "loudest")
    # Background: slides k = 1..slides; slide_detectors[i] is shifted by (i + 1) * k * slide_step
    # (a multiple of the stride, longer than the 27 ms light travel time between the sites),
    # circularly within each ring of consecutive analysed windows of at most `ring` s.
    slides: int = 0
    slide_step: float = 1.0  # s; slide k shifts slide_detectors[i] by (i + 1) k slide_step
    slide_detectors: list[str] = field(default_factory=lambda: ["L1", "V1"])  # H1 stays
    # s; a ring's rows (or a split model's features) are held in memory for the slides: an
    # hour of default CQT images ~0.5 GB, of g2net_1d_coinc features ~90 MB. A month of
    # background from an hour (720 slides of 1 s) needs rings of at least 2 x 720 s.
    ring: float = 4096.0
    match_window: float = 0.5  # s: an injection is found by a trigger within +-match_window
    # With --injections, a slid window any of whose detector rows comes from a window within
    # injection_veto s of an injection's merger is left out of the background (0: kept).
    injection_veto: float = 1.0
    # FARs (N/unit: s, minute, hour, day, week, month, year) at which injections are found.
    far_thresholds: list[str] = field(default_factory=lambda: ["1/day", "1/month", "1/year"])
    # Network-SNR bin edges of efficiency.png.
    snr_bins: list[float] = field(default_factory=lambda: [0.0, 8.0, 12.0, 16.0, 20.0, 30.0, 50.0])
    channels: dict = field(default_factory=dict)  # {"H1": "H1:GWOSC-16KHZ_R1_STRAIN", ...}
    matched_filter: MatchedFilterSearchConfig = field(default_factory=MatchedFilterSearchConfig)
    # Output directories of earlier searches (same models or bank, same window settings) whose
    # time-slide background is added to this search's own: MLGWSC-1's way, slides of a stretch
    # of noise without injections as the background of a stretch with them (no veto needed).
    background: list[str] = field(default_factory=list)
    # Explicit fold directories / best.safetensors; empty = every fold*/ under --runs.
    checkpoints: list[str] = field(default_factory=list)
    # Write windows.npz, every slide's window (or bin) scores, which a later search of the same
    # inputs with other trigger or FAR settings reuses instead of scoring again. false for a
    # search kept only as another's background (background.csv and summary.json are all
    # `background=[...]` reads): 1,500 slides of an hour are 2.8 GB of matched-filter bins.
    save_windows: bool = True
    # One row per background trigger (after the injection veto), with the GPS start of the
    # window each detector's row came from: training on this strain's hardest time-slid noise
    # (inject.hard_negatives, docs/training.md). Neural searches only; 0: not written.
    hard_negatives: int = 0  # write hard_negatives.csv: the N loudest background windows

    def __post_init__(self) -> None:
        for key, value in (("stride", self.stride), ("psd.span", self.psd.span),
                           ("psd.block", self.psd.block), ("psd.hop", self.psd.hop),
                           ("cluster", self.cluster), ("slide_step", self.slide_step),
                           ("ring", self.ring), ("match_window", self.match_window)):
            if not value > 0:
                raise ConfigError(f"{key}: must be > 0, got {value}")
        if self.integrate < 0:
            raise ConfigError(f"integrate: must be 0 (off) or more, got {self.integrate}")
        if self.injection_veto < 0:
            raise ConfigError(f"injection_veto: must be 0 or more, got {self.injection_veto}")
        if self.stride > 2.0:
            raise ConfigError(f"stride: at most 2 s (the window), got {self.stride}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size: must be at least 1, got {self.batch_size}")
        if self.slide_batch_size < 1:
            raise ConfigError(f"slide_batch_size: must be at least 1, got "
                              f"{self.slide_batch_size}")
        if self.threads < 0:
            raise ConfigError(f"threads: must be 0 (automatic) or more, got {self.threads}")
        if self.slides < 0:
            raise ConfigError(f"slides: must be 0 or more, got {self.slides}")
        if self.hard_negatives < 0:
            raise ConfigError(f"hard_negatives: must be 0 or more, got {self.hard_negatives}")
        if self.psd.min_segments < 1:
            raise ConfigError(f"psd.min_segments: must be at least 1, got {self.psd.min_segments}")
        bad = [d for d in self.slide_detectors if d not in DETECTORS[1:]]
        if bad or not self.slide_detectors or len(set(self.slide_detectors)) != len(
                self.slide_detectors):
            raise ConfigError(f"slide_detectors: one or two distinct of L1, V1 (H1 stays), got "
                              f"{self.slide_detectors}")
        unknown = [d for d in self.channels if d not in DETECTORS]
        if unknown:
            raise ConfigError(f"channels: unknown detector {unknown[0]!r} (known: "
                              f"{', '.join(DETECTORS)})")
        for spec in self.far_thresholds:
            far_per_year(spec)
        if list(self.snr_bins) != sorted(set(self.snr_bins)) or len(self.snr_bins) < 2:
            raise ConfigError(f"snr_bins: must be increasing, got {self.snr_bins}")

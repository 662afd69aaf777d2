"""vidsearch.search: snapshots of the index, and the query path over them.

A request is planned once (`QueryPlan`), then ranked in stages with typed values between them:
candidate pool (FAISS over segment vectors, BM25 and sentence vectors over text spans, fused by
reciprocal rank) → final ranking (X-Pool / TEFAL re-rank of each `Candidate`'s stored units, fused
again with the text channels) → moments (the relevance curve and timed evidence, cut by
`localize_moments`). The search package reads the index; it never imports the indexer.
"""

# The coarse stage first: it sets OMP_WAIT_POLICY before torch's OpenMP runtime loads (engine.py).
from .coarse import CoarseHits, CoarseIndex  # noqa: I001
from .engine import SearchEngine, open_engine
from .examples import ComposedQuery, ImageTooLarge, NotAnImage, compose, image_frame, like_vector
from .features import FeatureCache, QueryVectorCache, VideoFeatures
from .fusion import FusedRanking, reciprocal_rank_fusion
from .moments import Moment, MomentResult, RelevanceCurve, localize_moments, localize_moments_many, nms, temporal_iou
from .plan import QueryPlan, SearchError, TimeWindow
from .ranking import Candidate, Hit, Ranking, audio_hits, per_video_best
from .snapshot import Snapshot, build_snapshot
from .text_channels import TextChannels

__all__ = [
    "Candidate",
    "ComposedQuery",
    "CoarseHits",
    "CoarseIndex",
    "FeatureCache",
    "FusedRanking",
    "Hit",
    "ImageTooLarge",
    "Moment",
    "MomentResult",
    "NotAnImage",
    "QueryPlan",
    "QueryVectorCache",
    "Ranking",
    "RelevanceCurve",
    "SearchEngine",
    "SearchError",
    "Snapshot",
    "TextChannels",
    "TimeWindow",
    "VideoFeatures",
    "audio_hits",
    "build_snapshot",
    "compose",
    "image_frame",
    "like_vector",
    "localize_moments",
    "localize_moments_many",
    "nms",
    "open_engine",
    "per_video_best",
    "reciprocal_rank_fusion",
    "temporal_iou",
]

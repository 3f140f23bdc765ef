"""Ingestion library: read sources, fetch bytes safely, decode/validate/resize, hash, blur faces.

The `crawl-ingest` stage module wires these functions into shards and manifests; nothing here
knows about artifacts, the CLI or progress bars. FaceBlurrer imports OpenCV only when constructed,
so OpenCV stays an optional extra.
"""

from lvdtool.ingest.decode import ProcessConfig, ProcessResult, decode_image, encode_image, process_image
from lvdtool.ingest.faces import FaceBlurrer, FaceBox
from lvdtool.ingest.fetch import FetchConfig, FetchResult, Fetcher, read_file
from lvdtool.ingest.hashing import content_hash, hamming, phash64, to_signed64, to_unsigned64
from lvdtool.ingest.hooks import FilterHook, load_filter_hook
from lvdtool.ingest.netguard import UrlGuard, load_blocklist
from lvdtool.ingest.optout import DEFAULT_OPT_OUT_DIRECTIVES
from lvdtool.ingest.perceptual_index import PerceptualIndex
from lvdtool.ingest.resize import RESIZE_MODES, register_resize_mode
from lvdtool.ingest.sources import IMAGE_EXTENSIONS, SourceRecord, count_url_list, read_url_list, scan_directory

__all__ = [
    "DEFAULT_OPT_OUT_DIRECTIVES",
    "IMAGE_EXTENSIONS",
    "RESIZE_MODES",
    "FaceBlurrer",
    "FaceBox",
    "FetchConfig",
    "FetchResult",
    "Fetcher",
    "FilterHook",
    "PerceptualIndex",
    "ProcessConfig",
    "ProcessResult",
    "SourceRecord",
    "UrlGuard",
    "content_hash",
    "count_url_list",
    "decode_image",
    "encode_image",
    "hamming",
    "load_blocklist",
    "load_filter_hook",
    "phash64",
    "process_image",
    "read_file",
    "read_url_list",
    "register_resize_mode",
    "scan_directory",
    "to_signed64",
    "to_unsigned64",
]

"""vidsearch.server: the HTTP API over one index, the composition root of search and indexing.

`create_app(settings)` is the FastAPI app: one router per resource (search; videos with media and
thumbnails; jobs; health, metrics and index status), typed dependencies, a lifespan that opens the
search engine, and index jobs run by the indexer's `JobManager`. `local_client(settings)` is the
same API in-process, behind `VidsearchClient`. `search_response` turns a ranking into the API's
response (pages, rounding, links) for anyone holding an engine (benchmarks, tests).
"""

from .app import create_app, local_client
from .media import media_type, thumbnail, thumbnail_dir
from .presenting import search_response, video_info
from .state import ServerState

__all__ = ["ServerState", "create_app", "local_client", "media_type", "search_response", "thumbnail", "thumbnail_dir", "video_info"]

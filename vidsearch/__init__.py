"""vidsearch: text-to-video search that finds the moment, not just the file.

The core package holds what every part shares: settings (`config`), the index's schema and its
access (`schema`, `store`), the fingerprint contract, the API's models and client, the metrics, and
the `vidsearch` command. The other parts are subpackages in the repository's top-level folders of
the same names: `vidsearch.encoders`, `vidsearch.indexer`, `vidsearch.search`, `vidsearch.server`,
`vidsearch.ui` and `vidsearch.lab`. ARCHITECTURE.md shows how they fit and which may import which.
"""

__version__ = "0.1.0"

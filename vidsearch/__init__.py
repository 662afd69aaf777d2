"""vidsearch: text-to-video search that finds the moment, not just the file.

The core package holds what every part shares: settings, the store schema and its access, the
fingerprint contract, and the CLI. The subpackages (`vidsearch.indexer`, `vidsearch.encoders`,
`vidsearch.search`, `vidsearch.ui`) live in the repository's top-level folders of the same names.
"""

__version__ = "0.1.0"

"""vidsearch.indexer: discovery, probing, segmentation, decoding and the indexing pipeline."""

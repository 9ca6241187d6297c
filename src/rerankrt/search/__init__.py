"""Search over a gallery: the exact shortlist, the search index (a first stage behind one `FirstStage`
protocol, the re-rankers' database stores, shards) and how it is built, the dataset re-ranking loop, and
`Searcher` (a query image in, ranked gallery rows out). Torch-free at import; a torch backend is opened
through `rerankrt.models` when one is asked for."""

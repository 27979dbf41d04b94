"""Shadow-mode evaluation: a labelled corpus, the pipeline run without money, the scores."""

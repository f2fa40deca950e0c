"""The benchmark: questions and answers (XQuAD, local files), the corpus they are evaluated on, read in one process."""

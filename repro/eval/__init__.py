"""The evaluation pipeline of the paper's Table 1: data, prompts, generation backends, grading, scores."""

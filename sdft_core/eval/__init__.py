"""Evaluation: greedy answers and accuracy, forgetting, pass@k, the pre-flight, the LLM judge and its client, the
prior-capabilities suite (MMLU / IFEval / HumanEval offline) and statistics."""

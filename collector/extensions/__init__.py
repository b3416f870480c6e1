"""Extensions: components outside the pipelines (health_check, file_storage)."""

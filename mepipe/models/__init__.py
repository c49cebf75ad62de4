"""Training stages that read the store: the papers' models, the LOSO runner, metrics, reports."""

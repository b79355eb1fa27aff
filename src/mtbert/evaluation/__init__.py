"""Using models: dev metrics, prediction files, ensembles and reports of finished runs."""

"""Deploy targets: one interface (deploy, update, rollback, status, logs, delete), one record."""

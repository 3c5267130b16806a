"""Services: the ledger operations on the database. Each receives a ``Session``."""

"""Signal processing without learned weights."""

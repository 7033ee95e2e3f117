"""Domain types, the transaction state machine and the one error tree, shared by every part."""

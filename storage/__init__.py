"""Storage: the tables, the engine factory and the migrations shared by every component."""

"""Built-in stages. Every module here is imported when a short name is looked up."""

"""Built-in plugins. Each module here is registered like a third-party plugin
(through the same hooks), so a bug in the hook API shows up in our code first.
Adding a module here is all it takes to add a built-in plugin."""

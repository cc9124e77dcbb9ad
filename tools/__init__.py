"""The `irc` command-line tools."""

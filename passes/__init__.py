"""Graph passes over the irc IR, one file per pass."""

"""The screening history and the lookback: every screened address kept in PostgreSQL, looked up again whenever the
watchlist changes (retroactive matches, delistings). See docs/history.md."""

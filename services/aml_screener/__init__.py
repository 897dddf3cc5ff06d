"""aml-screener: event-driven AML screening of crypto withdrawals."""

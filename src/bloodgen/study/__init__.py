"""`bloodgen study`: train every family, evaluate each with the protocol, write one report."""

"""OFAC reporting: the reports a sanctions `reject` or `freeze` obliges, their deadlines, state and drafts."""

"""policy: which exchanges become records, what is never stored, and what fails closed. [pure once loaded]

`schema` loads a policy file into frozen, validated values (a bad file names file, key and reason);
`redaction` applies the redaction rules by field; `failure` turns the failure modes into a verdict.

Dependency rule: imports `core` and the shared base (`errors`, `resources`); nothing later in the data
path. See docs/design.md.
"""

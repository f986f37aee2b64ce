"""The ranking stage: candidate channels over saved runs, the shared feature builder, learned rankers."""

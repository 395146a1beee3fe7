"""The offline operations tools: render, plan and plan diff, cost, policy check, schema check,
deployability, secret pruning and the configuration reference, all run without the Pulumi CLI."""

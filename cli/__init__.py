"""sysplan.cli"""

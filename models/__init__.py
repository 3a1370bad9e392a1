"""sysplan.models"""

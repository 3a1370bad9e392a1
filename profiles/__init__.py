"""sysplan.profiles"""

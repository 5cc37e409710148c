import wallaroo


def application_setup(args:
    return wallaroo.build_application("broken", None)

import wallaroo


def setup(args):
    return wallaroo.build_application("nothing", None)

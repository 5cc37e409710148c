import wallaroo


def application_setup(args):
    print "setting up"
    return wallaroo.build_application("python 2", None)

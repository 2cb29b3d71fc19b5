import Hummingbird

extension Admin {
    /// The route groups beyond sessions and customers, one file each.
    func registerMoreRoutes(_ router: Router<AdminContext>) {
        overviewRoutes(router)
        queueRoutes(router)
        messageRoutes(router)
        tailRoutes(router)
        tlsRoutes(router)
        dkimRoutes(router)
        poolRoutes(router)
        blacklistRoutes(router)
    }
}
